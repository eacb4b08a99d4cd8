//! System V IPC objects (shared memory segments, message queues, semaphore sets): listing them
//! from `/proc/sysvipc`, reading an object's owner and removing it by id. `stockade uninstall`
//! uses these to remove what sandbox accounts left in the host's IPC namespace.

use crate::{cvt, SysResult};
use std::io;

/// The three kinds of System V IPC object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcKind {
    /// Shared memory segment (`shmget`).
    Shm,
    /// Message queue (`msgget`).
    Msg,
    /// Semaphore set (`semget`).
    Sem,
}

impl IpcKind {
    /// All kinds.
    pub const ALL: [IpcKind; 3] = [IpcKind::Shm, IpcKind::Msg, IpcKind::Sem];

    /// Name as in `/proc/sysvipc/<name>`.
    pub fn name(self) -> &'static str {
        match self {
            IpcKind::Shm => "shm",
            IpcKind::Msg => "msg",
            IpcKind::Sem => "sem",
        }
    }
}

/// One object listed in `/proc/sysvipc/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcObject {
    /// Kind.
    pub kind: IpcKind,
    /// Its id (what `*ctl` take).
    pub id: i32,
    /// Owner uid.
    pub uid: u32,
    /// Creator uid.
    pub cuid: u32,
}

/// Parses a `/proc/sysvipc/{shm,msg,sem}` listing (header line naming the columns, then one
/// line per object). Pure.
pub fn parse_sysvipc(kind: IpcKind, text: &str) -> Vec<IpcObject> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let id_col = match kind {
        IpcKind::Shm => col("shmid"),
        IpcKind::Msg => col("msqid"),
        IpcKind::Sem => col("semid"),
    };
    let (Some(id_col), Some(uid_col), Some(cuid_col)) = (id_col, col("uid"), col("cuid")) else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(IpcObject {
                kind,
                id: f.get(id_col)?.parse().ok()?,
                uid: f.get(uid_col)?.parse().ok()?,
                cuid: f.get(cuid_col)?.parse().ok()?,
            })
        })
        .collect()
}

/// The objects of one kind in this process's IPC namespace.
pub fn list(kind: IpcKind) -> io::Result<Vec<IpcObject>> {
    match std::fs::read_to_string(format!("/proc/sysvipc/{}", kind.name())) {
        Ok(s) => Ok(parse_sysvipc(kind, &s)),
        // A kernel without CONFIG_SYSVIPC has no objects to remove.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The current owner and creator uids of object `id` (`IPC_STAT`).
pub fn owner(kind: IpcKind, id: i32) -> SysResult<(u32, u32)> {
    let what = || format!("{} id {id}", kind.name());
    match kind {
        IpcKind::Shm => {
            // SAFETY: shmid_ds is a plain C struct of integers; all-zero is valid.
            let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: IPC_STAT writes one shmid_ds into `ds`, which is valid and writable.
            cvt("shmctl", what, unsafe {
                libc::shmctl(id, libc::IPC_STAT, &mut ds)
            })?;
            Ok((ds.shm_perm.uid, ds.shm_perm.cuid))
        }
        IpcKind::Msg => {
            // SAFETY: msqid_ds is a plain C struct of integers; all-zero is valid.
            let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: IPC_STAT writes one msqid_ds into `ds`, which is valid and writable.
            cvt("msgctl", what, unsafe {
                libc::msgctl(id, libc::IPC_STAT, &mut ds)
            })?;
            Ok((ds.msg_perm.uid, ds.msg_perm.cuid))
        }
        IpcKind::Sem => {
            // SAFETY: semid_ds is a plain C struct of integers; all-zero is valid.
            let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: with IPC_STAT the fourth argument (union semun) is its `buf` member, a
            // pointer to one semid_ds, which `ds` is (valid and writable); semnum is ignored.
            cvt("semctl", what, unsafe {
                libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds)
            })?;
            Ok((ds.sem_perm.uid, ds.sem_perm.cuid))
        }
    }
}

/// Removes object `id` (`IPC_RMID`). A shared memory segment still attached somewhere goes away
/// when its last user detaches; queues and semaphore sets go at once.
pub fn remove(kind: IpcKind, id: i32) -> SysResult<()> {
    let what = || format!("{} id {id}", kind.name());
    let r = match kind {
        // SAFETY: IPC_RMID ignores the buffer argument; a null pointer is allowed.
        IpcKind::Shm => unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        // SAFETY: IPC_RMID ignores the buffer argument; a null pointer is allowed.
        IpcKind::Msg => unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        // SAFETY: IPC_RMID takes no fourth argument; semnum is ignored.
        IpcKind::Sem => unsafe { libc::semctl(id, 0, libc::IPC_RMID) },
    };
    cvt(
        match kind {
            IpcKind::Shm => "shmctl",
            IpcKind::Msg => "msgctl",
            IpcKind::Sem => "semctl",
        },
        what,
        r,
    )
    .map(drop)
}

/// Removes every object of `uids` (owner or creator) in this IPC namespace, re-reading each
/// object's owner by id just before removing it (an id listed a moment ago may have been
/// removed and reused). Returns the objects removed; an object that vanished meanwhile is not
/// an error.
pub fn remove_owned_by(uids: &[u32]) -> io::Result<Vec<IpcObject>> {
    let mut removed = Vec::new();
    for kind in IpcKind::ALL {
        for o in list(kind)? {
            if !uids.contains(&o.uid) && !uids.contains(&o.cuid) {
                continue;
            }
            match owner(kind, o.id) {
                Ok((uid, cuid)) if uids.contains(&uid) || uids.contains(&cuid) => {}
                Ok(_) => continue,
                Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::EIDRM)) => continue,
                Err(e) => return Err(e.into()),
            }
            match remove(kind, o.id) {
                Ok(()) => removed.push(o),
                Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::EIDRM)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_sysvipc_listings() {
        let shm = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                   0x6d2a4c11          7   666                  4096  1234     0      0   999   995   999   995          0          0 1700000000                     0                     0\n\
                   0x00000000         12   600                  4096  1   0      0   0   0  1001  1001          0          0 1700000000 0 0\n";
        assert_eq!(
            parse_sysvipc(IpcKind::Shm, shm),
            vec![
                IpcObject {
                    kind: IpcKind::Shm,
                    id: 7,
                    uid: 999,
                    cuid: 999
                },
                IpcObject {
                    kind: IpcKind::Shm,
                    id: 12,
                    uid: 0,
                    cuid: 1001
                },
            ]
        );
        let msg = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n\
                   0x00000001          3   644           0          0     0     0  1000  1000  1000  1000          0          0 1700000000\n";
        assert_eq!(
            parse_sysvipc(IpcKind::Msg, msg),
            vec![IpcObject {
                kind: IpcKind::Msg,
                id: 3,
                uid: 1000,
                cuid: 1000
            }]
        );
        let sem = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n\
                   0x00000002          5   600          1   998   995   998   995          0 1700000000\n";
        assert_eq!(
            parse_sysvipc(IpcKind::Sem, sem),
            vec![IpcObject {
                kind: IpcKind::Sem,
                id: 5,
                uid: 998,
                cuid: 998
            }]
        );
        assert!(parse_sysvipc(IpcKind::Shm, "").is_empty());
        assert!(parse_sysvipc(IpcKind::Shm, "garbage header\n1 2 3\n").is_empty());
    }
}
