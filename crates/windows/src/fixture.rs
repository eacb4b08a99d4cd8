//! Test fixture: a small Windows filesystem with the DACLs a default install has, a user profile
//! and a workspace with nested repositories. Paths have spaces and non-ASCII characters.

use crate::access::{FsModel, Node};
use crate::ace::{mask, Ace, Inherit, PathAces};
use crate::input::{Kind, PlannedWinPath, WinPlanInput};
use crate::path::WinPath;
use crate::sid::Sid;

pub const ME: &str = "S-1-5-21-100-200-300-1001";
pub const LOGON: &str = "S-1-5-5-0-99999";
pub const WS: &str = r"C:\Users\me\My Projects\Zoë repo";
pub const OTHER_WS: &str = r"C:\Users\me\other";

pub fn p(s: &str) -> WinPath {
    WinPath::parse(s).expect("fixture path")
}
pub fn sid(s: &str) -> Sid {
    Sid::parse(s).expect("fixture sid")
}
pub fn me() -> Sid {
    sid(ME)
}
pub fn ws(rel: &str) -> WinPath {
    if rel.is_empty() {
        p(WS)
    } else {
        p(WS).join(rel).expect("fixture join")
    }
}

fn node(dir: bool, owner: Sid, explicit: Vec<Ace>, protected: bool) -> Node {
    Node {
        dir,
        owner,
        explicit,
        protected,
    }
}

/// The filesystem before any plan is applied.
pub fn filesystem() -> FsModel {
    let mut fs = FsModel::new();
    let sys = Sid::local_system();
    let adm = Sid::administrators();
    let rx = mask::FILE_GENERIC_READ | mask::FILE_GENERIC_EXECUTE;
    fs.insert(
        p(r"C:\"),
        node(
            true,
            sys.clone(),
            vec![
                Ace::allow(adm.clone(), mask::FILE_ALL_ACCESS, Inherit::TREE),
                Ace::allow(sys.clone(), mask::FILE_ALL_ACCESS, Inherit::TREE),
                Ace::allow(Sid::users(), rx, Inherit::TREE),
                Ace::allow(
                    Sid::authenticated_users(),
                    mask::FILE_APPEND_DATA,
                    Inherit::NONE,
                ),
                Ace::allow(
                    Sid::authenticated_users(),
                    mask::GENERIC_READ | mask::GENERIC_WRITE | mask::GENERIC_EXECUTE | mask::DELETE,
                    Inherit(Inherit::TREE.0 | Inherit::INHERIT_ONLY),
                ),
            ],
            true,
        ),
    );
    let system_dir = vec![
        Ace::allow(adm.clone(), mask::FILE_ALL_ACCESS, Inherit::TREE),
        Ace::allow(sys.clone(), mask::FILE_ALL_ACCESS, Inherit::TREE),
        Ace::allow(Sid::users(), rx, Inherit::TREE),
    ];
    fs.insert(
        p(r"C:\Windows"),
        node(true, sys.clone(), system_dir.clone(), true),
    );
    fs.insert(
        p(r"C:\Windows\System32"),
        node(true, sys.clone(), vec![], false),
    );
    fs.insert(p(r"C:\Users"), node(true, sys.clone(), system_dir, true));
    fs.insert(
        p(r"C:\Everyone Writable"),
        node(
            true,
            sys.clone(),
            vec![Ace::allow(
                Sid::everyone(),
                mask::FILE_ALL_ACCESS,
                Inherit::TREE,
            )],
            true,
        ),
    );
    let profile = vec![
        Ace::allow(sys.clone(), mask::FILE_ALL_ACCESS, Inherit::TREE),
        Ace::allow(adm, mask::FILE_ALL_ACCESS, Inherit::TREE),
        Ace::allow(me(), mask::FILE_ALL_ACCESS, Inherit::TREE),
    ];
    fs.insert(p(r"C:\Users\me"), node(true, me(), profile, true));
    for (rel, dir) in [
        (r"Documents", true),
        (r"Documents\secret.txt", false),
        (r"My Projects", true),
        (r"other", true),
        (r"other\notes.txt", false),
        (r"other\.git", true),
        (r"gitdirs", true),
        (r"gitdirs\wt", true),
        (r"gitdirs\wt\HEAD", false),
    ] {
        fs.insert(
            p(r"C:\Users\me").join(rel).expect("join"),
            node(dir, me(), vec![], false),
        );
    }
    for (rel, dir) in [
        ("", true),
        ("src", true),
        (r"src\main.rs", false),
        (".git", true),
        (r".git\HEAD", false),
        (r".git\objects", true),
        (r".git\modules", true),
        (r".git\modules\sub", true),
        (r".git\modules\sub\config", false),
        ("sub", true),
        (r"sub\.git", false),
        (r"sub\lib.rs", false),
        ("linked", true),
        (r"linked\.git", false),
        (".stockade", true),
        (r".stockade\config.toml", false),
        ("tmp", true),
    ] {
        fs.insert(ws(rel), node(dir, me(), vec![], false));
    }
    fs
}

fn prot(path: WinPath, kind: Kind, reason: &str) -> PlannedWinPath {
    PlannedWinPath {
        path,
        kind,
        reason: reason.into(),
    }
}

/// What the policy would plan for the fixture workspace.
pub fn input() -> WinPlanInput {
    let mut i = WinPlanInput::for_workspace(WS).expect("ws");
    i.protected = vec![
        prot(ws(".git"), Kind::Dir, ".git directory"),
        prot(ws(r"sub\.git"), Kind::File, ".git file"),
        prot(ws(r".git\modules\sub"), Kind::Dir, r"gitdir of sub\.git"),
        prot(ws(r"linked\.git"), Kind::File, ".git file"),
        prot(
            p(r"C:\Users\me\gitdirs\wt"),
            Kind::Dir,
            r"gitdir of linked\.git",
        ),
        prot(ws(".stockade"), Kind::Dir, "agent config"),
    ];
    i.protected_missing = vec![ws(".codex"), ws(".claude"), ws(".agents")];
    i.temp_dir = Some(ws("tmp"));
    i
}

/// Adds a plan's ACEs to the model (what `win::acl::apply` does on a real volume).
pub fn apply(fs: &mut FsModel, acl: &[PathAces]) {
    for pa in acl {
        assert!(
            fs.add_explicit(&pa.path, &pa.aces),
            "plan ACE on a path missing from the fixture: {}",
            pa.path
        );
    }
}

/// Every interesting path, existing or not, for exhaustive checks.
pub fn probes() -> Vec<WinPath> {
    let fs = filesystem();
    let mut v: Vec<WinPath> = [
        r"C:\new.txt",
        r"C:\Windows\new.dll",
        r"C:\Windows\System32\drivers.sys",
        r"C:\Users\me\new.txt",
        r"C:\Users\me\Documents\secret.txt",
        r"C:\Users\me\Documents\new.txt",
        r"C:\Users\me\other\notes.txt",
        r"C:\Users\me\other\new.txt",
        r"C:\Users\me\other\.git\config",
        r"C:\Users\me\gitdirs\wt\HEAD",
        r"C:\Users\me\gitdirs\wt\new",
        r"C:\Users\me\My Projects\sibling.txt",
    ]
    .iter()
    .map(|s| p(s))
    .collect();
    for rel in [
        "new file ü.txt",
        r"src\main.rs",
        r"src\new.rs",
        r".git\HEAD",
        r".git\new",
        r".git\objects\ab",
        r".git\modules\sub\config",
        r".git\modules\sub\new",
        r"sub\.git",
        r"sub\lib.rs",
        r"sub\new.rs",
        r"linked\.git",
        r"linked\x",
        r".stockade\config.toml",
        r".stockade\new",
        r"tmp\scratch",
    ] {
        v.push(ws(rel));
    }
    v.retain(|x| x.parent().is_some_and(|pp| fs.exists(&pp)));
    v
}
