//! Security identifiers in their string form (`S-1-5-21-...`), and the synthetic capability SIDs
//! Stockade mints for writable roots.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a SID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SID string (expected S-1-<authority>-<sub>-...)")]
pub struct SidParseError(pub String);

/// A SID: identifier authority and up to 15 sub-authorities.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sid {
    authority: u64,
    subs: Vec<u32>,
}

impl Sid {
    /// Builds a SID from its parts (at most 15 sub-authorities, authority < 2^48).
    pub fn new(authority: u64, subs: &[u32]) -> Result<Sid, SidParseError> {
        if subs.len() > 15 || authority >= 1 << 48 {
            return Err(SidParseError(format!("S-1-{authority}-{subs:?}")));
        }
        Ok(Sid {
            authority,
            subs: subs.to_vec(),
        })
    }

    /// Parses `S-1-...`.
    pub fn parse(s: &str) -> Result<Sid, SidParseError> {
        let err = || SidParseError(s.to_string());
        let mut it = s.split('-');
        if !matches!(it.next(), Some("S") | Some("s")) || it.next() != Some("1") {
            return Err(err());
        }
        let auth = it.next().ok_or_else(err)?;
        let authority =
            if let Some(hex) = auth.strip_prefix("0x").or_else(|| auth.strip_prefix("0X")) {
                u64::from_str_radix(hex, 16).map_err(|_| err())?
            } else {
                auth.parse::<u64>().map_err(|_| err())?
            };
        let subs = it
            .map(|x| x.parse::<u32>().map_err(|_| err()))
            .collect::<Result<Vec<_>, _>>()?;
        Sid::new(authority, &subs).map_err(|_| err())
    }

    /// A synthetic capability SID `S-1-5-21-a-b-c-d` from 16 random bytes. It has the shape of a
    /// local account SID, so every ACL API accepts it, but no account or group has it.
    pub fn capability_from_random(bytes: [u8; 16]) -> Sid {
        let w = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Sid {
            authority: 5,
            subs: vec![21, w(0), w(4), w(8), w(12)],
        }
    }

    /// True for `S-1-5-21-...` SIDs with exactly four sub-authorities after 21 (what
    /// [`Sid::capability_from_random`] produces).
    pub fn looks_like_capability(&self) -> bool {
        self.authority == 5 && self.subs.len() == 5 && self.subs[0] == 21
    }

    /// Identifier authority.
    pub fn authority(&self) -> u64 {
        self.authority
    }

    /// Sub-authorities.
    pub fn sub_authorities(&self) -> &[u32] {
        &self.subs
    }

    /// `S-1-1-0`, Everyone.
    pub fn everyone() -> Sid {
        Sid {
            authority: 1,
            subs: vec![0],
        }
    }
    /// `S-1-5-18`, LocalSystem.
    pub fn local_system() -> Sid {
        Sid {
            authority: 5,
            subs: vec![18],
        }
    }
    /// `S-1-5-32-544`, BUILTIN\Administrators.
    pub fn administrators() -> Sid {
        Sid {
            authority: 5,
            subs: vec![32, 544],
        }
    }
    /// `S-1-5-32-545`, BUILTIN\Users.
    pub fn users() -> Sid {
        Sid {
            authority: 5,
            subs: vec![32, 545],
        }
    }
    /// `S-1-5-11`, Authenticated Users.
    pub fn authenticated_users() -> Sid {
        Sid {
            authority: 5,
            subs: vec![11],
        }
    }
    /// `S-1-5-4`, INTERACTIVE.
    pub fn interactive() -> Sid {
        Sid {
            authority: 5,
            subs: vec![4],
        }
    }
    /// `S-1-3-0`, CREATOR OWNER (only meaningful in inheritable ACEs).
    pub fn creator_owner() -> Sid {
        Sid {
            authority: 3,
            subs: vec![0],
        }
    }
    /// `S-1-3-4`, OWNER RIGHTS: an ACE for it replaces the owner's implicit
    /// `READ_CONTROL | WRITE_DAC` with the rights the ACE names.
    pub fn owner_rights() -> Sid {
        Sid {
            authority: 3,
            subs: vec![4],
        }
    }
    /// `S-1-5-5-x-y`, a logon-session SID.
    pub fn logon(x: u32, y: u32) -> Sid {
        Sid {
            authority: 5,
            subs: vec![5, x, y],
        }
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.authority >= 1 << 32 {
            write!(f, "S-1-0x{:012X}", self.authority)?;
        } else {
            write!(f, "S-1-{}", self.authority)?;
        }
        for s in &self.subs {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}
impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}
impl TryFrom<String> for Sid {
    type Error = SidParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Sid::parse(&s)
    }
}
impl From<Sid> for String {
    fn from(s: Sid) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "S-1-1-0",
            "S-1-5-32-544",
            "S-1-5-21-1-2-3-1001",
            "S-1-5-5-0-123456",
            "S-1-16-12288",
        ] {
            assert_eq!(Sid::parse(s).map(|x| x.to_string()), Ok(s.to_string()));
        }
        assert!(Sid::parse("S-2-5").is_err());
        assert!(Sid::parse("S-1-5-x").is_err());
        assert!(Sid::parse("S-1").is_err());
        assert!(Sid::parse("S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16").is_err());
    }

    #[test]
    fn capability_sids_are_account_shaped_and_distinct() {
        let a = Sid::capability_from_random([1; 16]);
        let b = Sid::capability_from_random([2; 16]);
        assert_ne!(a, b);
        assert!(a.looks_like_capability());
        assert!(a.to_string().starts_with("S-1-5-21-"));
        assert_eq!(Sid::parse(&a.to_string()), Ok(a));
        assert!(!Sid::everyone().looks_like_capability());
    }
}
