//! Multi-step attacks on both tiers, run against the access-check model ([`crate::access`]) with
//! the plans applied: the plans before issue 15 ("old") and the current ones ("new"). Each attack
//! has a positive control (the same steps succeed for the caller on the unplanned filesystem)
//! and counts its steps, so a test cannot pass because an attack did not run.

use crate::access::{access_check_typed, key, FsModel, Op, TokenModel, KEY_MAPPING};
use crate::ace::{mask, Ace, Inherit, PathAces};
use crate::elevated::{run_acl, run_plan};
use crate::fixture::{self, me, p, sid, ws, LOGON};
use crate::path::WinPath;
use crate::sid::Sid;
use crate::state::CapabilityStore;
use crate::unelevated::{self, flags, SidRef, UnelevatedOptions, GUARD_REASON};

type Attack = fn(&mut FsModel, &TokenModel, &mut u32) -> bool;

thread_local! {
    /// The table rows the attack tests produce (printed by [`attack_table_old_plans_fail_new_plans_pass`]).
    static ROWS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records one row of the old/new table (and prints it, for `--nocapture` on a single test).
macro_rules! row {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        ROWS.with(|r| r.borrow_mut().push(line));
    }};
}

/// Runs `steps` in order; true if every step succeeded. `ran` counts the steps attempted.
fn steps(fs: &mut FsModel, t: &TokenModel, ran: &mut u32, list: &[(WinPath, Op)]) -> bool {
    for (path, op) in list {
        *ran += 1;
        if !fs.perform(t, path, op) {
            return false;
        }
    }
    true
}

fn everyone_all() -> Vec<Ace> {
    vec![Ace::allow(
        Sid::everyone(),
        mask::FILE_ALL_ACCESS,
        Inherit::NONE,
    )]
}

fn write_dac_then_write(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    let mut aces = everyone_all();
    aces.extend(
        t.restricting
            .iter()
            .map(|s| Ace::allow(s.clone(), mask::FILE_ALL_ACCESS, Inherit::NONE)),
    );
    steps(
        fs,
        t,
        ran,
        &[
            (ws(r".git\HEAD"), Op::SetDacl(aces)),
            (ws(r".git\HEAD"), Op::Open(mask::FILE_WRITE_DATA)),
        ],
    )
}

fn write_dac_dir_then_add_hook(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    let aces = vec![Ace::allow(
        Sid::everyone(),
        mask::FILE_ALL_ACCESS,
        Inherit::TREE,
    )];
    steps(
        fs,
        t,
        ran,
        &[
            (ws(".git"), Op::SetDacl(aces)),
            (ws(r".git\hooks-pre-commit"), Op::CreateFile),
        ],
    )
}

fn rename_git_and_recreate(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(
        fs,
        t,
        ran,
        &[
            (ws(".git"), Op::RenameTo(ws("old-git"))),
            (ws(".git"), Op::CreateDir),
            (ws(r".git\config"), Op::CreateFile),
        ],
    )
}

fn delete_protected_file_and_recreate(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(
        fs,
        t,
        ran,
        &[
            (ws(r"sub\.git"), Op::Delete),
            (ws(r"sub\.git"), Op::CreateFile),
        ],
    )
}

/// Rename the directory holding a nested protected path (`sub`, which holds the gitfile
/// `sub\.git`) away, create it again and plant a new `sub\.git` (which can point at a gitdir the
/// command wrote: `git` in the superproject then runs its hooks and config as you).
fn rename_ancestor_of_protected_and_recreate(
    fs: &mut FsModel,
    t: &TokenModel,
    ran: &mut u32,
) -> bool {
    steps(
        fs,
        t,
        ran,
        &[
            (ws("sub"), Op::RenameTo(ws("sub-old"))),
            (ws("sub"), Op::CreateDir),
            (ws(r"sub\.git"), Op::CreateFile),
        ],
    )
}

/// [`rename_ancestor_of_protected_and_recreate`] with a re-ACL of `sub` first (to drop the
/// ancestor guard's deny of `DELETE`): what the DACL lock on the ancestor stops.
fn re_acl_ancestor_then_rename_and_recreate(
    fs: &mut FsModel,
    t: &TokenModel,
    ran: &mut u32,
) -> bool {
    let aces = vec![Ace::allow(
        Sid::everyone(),
        mask::FILE_ALL_ACCESS,
        Inherit::NONE,
    )];
    steps(
        fs,
        t,
        ran,
        &[
            (ws("sub"), Op::SetDacl(aces)),
            (ws("sub"), Op::RenameTo(ws("sub-old"))),
            (ws("sub"), Op::CreateDir),
            (ws(r"sub\.git"), Op::CreateFile),
        ],
    )
}

fn re_acl_gitdir_outside_root(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(
        fs,
        t,
        ran,
        &[
            (
                p(r"C:\Users\me\gitdirs\wt\HEAD"),
                Op::SetDacl(everyone_all()),
            ),
            (
                p(r"C:\Users\me\gitdirs\wt\HEAD"),
                Op::Open(mask::FILE_WRITE_DATA),
            ),
        ],
    )
}

fn mkdir_c_root(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(fs, t, ran, &[(p(r"C:\x"), Op::CreateDir)])
}

fn re_acl_git_then_rename_and_recreate(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    let aces = vec![Ace::allow(
        Sid::everyone(),
        mask::FILE_ALL_ACCESS,
        Inherit::TREE,
    )];
    steps(
        fs,
        t,
        ran,
        &[
            (ws(".git"), Op::SetDacl(aces)),
            (ws(".git"), Op::RenameTo(ws("old-git"))),
            (ws(".git"), Op::CreateDir),
            (ws(r".git\config"), Op::CreateFile),
        ],
    )
}

/// Re-ACL the workspace root (the parent of `.git`: the delete-child guard), then rename `.git`
/// away through the parent's `FILE_DELETE_CHILD` and recreate it.
fn re_acl_root_then_rename_git(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(
        fs,
        t,
        ran,
        &[
            (
                ws(""),
                Op::SetDacl(vec![Ace::allow(
                    Sid::everyone(),
                    mask::FILE_ALL_ACCESS,
                    Inherit::TREE,
                )]),
            ),
            (ws(".git"), Op::RenameTo(ws("old-git"))),
            (ws(".git"), Op::CreateDir),
            (ws(r".git\config"), Op::CreateFile),
        ],
    )
}

/// What git does to change a config (`git config`, `git commit` updating a ref): write
/// `config.lock`, then replace `config` by it (delete + rename).
fn git_lock_and_rename(fs: &mut FsModel, t: &TokenModel, dir: &str) -> bool {
    let (lock, file) = (
        ws(&format!(r"{dir}\config.lock")),
        ws(&format!(r"{dir}\config")),
    );
    fs.perform(t, &lock, &Op::CreateFile)
        && fs.can_write(t, &lock)
        && (!fs.exists(&file) || fs.perform(t, &file, &Op::Delete))
        && fs.perform(t, &lock, &Op::RenameTo(file))
}

/// (name, attack, allowed by the new plan with the lock turned off
/// (`lock_protected_dacls: false`, the opt-out)). The default new plan denies every one.
const UNELEVATED_ATTACKS: &[(&str, Attack, bool)] = &[
    (
        "WRITE_DAC then write .git\\HEAD",
        write_dac_then_write,
        true,
    ),
    (
        "WRITE_DAC on .git then add a file",
        write_dac_dir_then_add_hook,
        true,
    ),
    (
        "rename .git and recreate it",
        rename_git_and_recreate,
        false,
    ),
    (
        "re-ACL .git, rename it and recreate it",
        re_acl_git_then_rename_and_recreate,
        true,
    ),
    (
        "delete protected file sub\\.git and recreate",
        delete_protected_file_and_recreate,
        false,
    ),
    (
        "WRITE_DAC then write a gitdir outside the root",
        re_acl_gitdir_outside_root,
        true,
    ),
    (
        "rename sub away, recreate it with a new sub\\.git",
        rename_ancestor_of_protected_and_recreate,
        false,
    ),
    (
        "re-ACL sub, rename it away, recreate sub\\.git",
        re_acl_ancestor_then_rename_and_recreate,
        true,
    ),
    (
        "re-ACL the root, rename .git away, recreate it",
        re_acl_root_then_rename_git,
        true,
    ),
];

fn caps(roots: &[WinPath], seed: u8) -> CapabilityStore {
    let mut c = CapabilityStore::default();
    let mut n = seed;
    c.ensure(roots, || {
        n = n.wrapping_add(1);
        [n; 16]
    })
    .expect("caps");
    c
}

fn resolve(r: &SidRef, user: &Sid, logon: &Sid) -> Sid {
    match r {
        SidRef::Fixed(s) => s.clone(),
        SidRef::LogonSession => logon.clone(),
        SidRef::CurrentUser => user.clone(),
        SidRef::RunSession => sid("S-1-5-21-77-77-77-78"),
    }
}

fn caller_groups() -> Vec<Sid> {
    vec![
        Sid::everyone(),
        Sid::users(),
        Sid::authenticated_users(),
        Sid::interactive(),
        sid(LOGON),
    ]
}

fn caller() -> TokenModel {
    TokenModel {
        user: me(),
        groups: caller_groups(),
        deny_only: vec![],
        restricting: vec![],
        write_restricted: false,
    }
}

fn unelevated_token(plan: &unelevated::UnelevatedPlan) -> TokenModel {
    let c = caller();
    TokenModel {
        groups: c
            .groups
            .iter()
            .filter(|g| !plan.token.deny_only.contains(g))
            .cloned()
            .collect(),
        deny_only: plan.token.deny_only.clone(),
        restricting: plan
            .token
            .restricting
            .iter()
            .map(|r| resolve(&r.sid, &me(), &sid(LOGON)))
            .collect(),
        write_restricted: plan.token.flags & flags::WRITE_RESTRICTED != 0,
        ..caller()
    }
}

fn applied(acl: &[PathAces]) -> FsModel {
    let mut fs = fixture::filesystem();
    fixture::apply(&mut fs, acl);
    fs
}

/// The unelevated plan as it was before the metadata guards (the same plan without them).
fn old_unelevated_acl(plan: &unelevated::UnelevatedPlan) -> Vec<PathAces> {
    plan.acl
        .iter()
        .filter(|a| !a.reason.starts_with(GUARD_REASON))
        .cloned()
        .collect()
}

fn run_attack(acl: &[PathAces], t: &TokenModel, a: Attack) -> (bool, u32) {
    let mut fs = applied(acl);
    let mut ran = 0;
    let ok = a(&mut fs, t, &mut ran);
    (ok, ran)
}

fn positive_control(a: Attack, name: &str) {
    let mut fs = fixture::filesystem();
    let mut ran = 0;
    assert!(
        a(&mut fs, &caller(), &mut ran),
        "control: {name} must work for the caller without a plan"
    );
    assert!(ran >= 1);
}

/// The token of the unelevated tier before issue 15 (no deny-only group).
fn old_unelevated_token(plan: &unelevated::UnelevatedPlan) -> TokenModel {
    TokenModel {
        groups: caller().groups,
        deny_only: vec![],
        ..unelevated_token(plan)
    }
}

#[test]
fn unelevated_attacks_old_plan_allows_new_plan_denies() {
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 0);
    let plan = unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
    assert!(UnelevatedOptions::default().lock_protected_dacls);
    let open_opts = UnelevatedOptions {
        lock_protected_dacls: false,
        ..UnelevatedOptions::default()
    };
    let unlocked = unelevated::plan(&input, &c, open_opts, &me()).expect("plan");
    let t = unelevated_token(&plan);
    let word = |b: bool| if b { "ALLOWED" } else { "denied" };
    for (name, a, unlocked_allows) in UNELEVATED_ATTACKS {
        positive_control(*a, name);
        let (old, old_ran) =
            run_attack(&old_unelevated_acl(&plan), &old_unelevated_token(&plan), *a);
        let (new, new_ran) = run_attack(&plan.acl, &t, *a);
        let (open, _) = run_attack(&unlocked.acl, &unelevated_token(&unlocked), *a);
        row!(
            "unelevated | {name:<48} | old plan: {:<7} ({old_ran} steps) | new plan: {:<7} (stopped at step {new_ran}) | opt-out lock_protected_dacls=false: {}",
            word(old), word(new), word(open)
        );
        assert!(old, "{name}: the old plan was expected to allow it");
        assert!(!new, "{name}: the default new plan must deny it");
        assert!(new_ran >= 1);
        assert_eq!(open, *unlocked_allows, "{name}: new plan with the lock off");
    }
    // The caller keeps writing into .git the way git does (config.lock, then rename), but
    // loses rename/delete of .git itself.
    let mut fs = applied(&plan.acl);
    assert!(fs.can_write(&caller(), &ws(r".git\HEAD")));
    assert!(fs.allowed(
        &caller(),
        &ws(r".git
ew"),
        &Op::CreateFile
    ));
    assert!(git_lock_and_rename(&mut fs, &caller(), r".git\modules\sub"));
    assert!(git_lock_and_rename(&mut fs, &caller(), ".git"));
    assert!(!fs.allowed(&caller(), &ws(".git"), &Op::RenameTo(ws("old-git"))));
    // ...and keeps WRITE_DAC and WRITE_OWNER through Authenticated Users (the escape allow
    // precedes the deny), so Stockade and `stockade clean` can still change them; the
    // command, with Authenticated Users deny-only, cannot.
    for path in [ws(".git"), ws(r".git\HEAD"), ws(""), ws(r"sub\.git")] {
        assert!(
            fs.check(&caller(), &path, mask::WRITE_DAC | mask::WRITE_OWNER),
            "{path}"
        );
        assert!(!fs.check(&t, &path, mask::WRITE_DAC), "{path}");
        assert!(!fs.check(&t, &path, mask::WRITE_OWNER), "{path}");
    }
    let mut admin_token = caller();
    admin_token.groups.push(Sid::administrators());
    assert!(fs.check(&admin_token, &ws(".git"), mask::WRITE_DAC));
    // The lock's cost, in the model: a token of yours without Authenticated Users enabled
    // (as the command's) cannot change those DACLs either; in canonical order (what
    // Explorer's "reorder" would do) the deny comes first and locks you out too.
    let mut without_au = caller();
    without_au
        .groups
        .retain(|g| *g != unelevated::lock_escape_group());
    assert!(!fs.check(&without_au, &ws(".git"), mask::WRITE_DAC));
    let mut reordered = fs.stored_dacl(&ws(".git")).expect(".git").to_vec();
    reordered.sort_by_key(|a| {
        (
            a.inherit.has(Inherit::INHERITED),
            a.kind == crate::ace::AceKind::Allow,
        )
    });
    let owner = fs.owner(&ws(".git")).expect("owner").clone();
    assert!(crate::access::access_check(
        &caller(),
        &reordered,
        &owner,
        mask::READ_CONTROL
    ));
    assert!(!crate::access::access_check(
        &caller(),
        &reordered,
        &owner,
        mask::WRITE_DAC
    ));
}

/// What stays open in the unelevated tier under the new plan, as the warnings say.
#[test]
fn unelevated_remaining_gaps_match_the_warnings() {
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 0);
    let plan = unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
    let t = unelevated_token(&plan);
    let mut fs = applied(&plan.acl);
    // Files inside a protected directory can be deleted (but not recreated).
    assert!(fs.allowed(&t, &ws(r".git\HEAD"), &Op::Delete));
    assert!(fs.perform(&t, &ws(r".git\HEAD"), &Op::Delete));
    assert!(!fs.allowed(&t, &ws(r".git\HEAD"), &Op::CreateFile));
    // Any file the caller owns outside the guarded paths: delete, or re-ACL then write.
    assert!(fs.allowed(&t, &p(r"C:\Users\me\Documents\secret.txt"), &Op::Delete));
    assert!(fs.perform(
        &t,
        &p(r"C:\Users\me\Documents\secret.txt"),
        &Op::SetDacl(everyone_all())
    ));
    assert!(fs.can_write(&t, &p(r"C:\Users\me\Documents\secret.txt")));
    assert!(plan.warnings[0].contains("guardrail, not a boundary"));
    assert!(plan.warnings[0].contains("re-ACL"));
}

/// `HKCU\Software\Microsoft\Windows\CurrentVersion\Run`: owned by the caller, full control for
/// the caller, read for RESTRICTED.
fn run_key_acl(user: &Sid) -> Vec<Ace> {
    vec![
        Ace::allow(
            user.clone(),
            key::ALL_ACCESS,
            Inherit(Inherit::CONTAINER | Inherit::INHERITED),
        ),
        Ace::allow(
            Sid::local_system(),
            key::ALL_ACCESS,
            Inherit(Inherit::CONTAINER | Inherit::INHERITED),
        ),
        Ace::allow(
            Sid::administrators(),
            key::ALL_ACCESS,
            Inherit(Inherit::CONTAINER | Inherit::INHERITED),
        ),
        Ace::allow(
            sid("S-1-5-12"),
            key::READ,
            Inherit(Inherit::CONTAINER | Inherit::INHERITED),
        ),
    ]
}

/// The Run-key attack: WRITE_DAC (not a write bit), add Everyone, set a value.
fn run_key_attack(t: &TokenModel, owner: &Sid, acl: &[Ace]) -> (bool, u32) {
    let mut ran = 1;
    if !access_check_typed(t, acl, owner, mask::WRITE_DAC, &KEY_MAPPING) {
        return (false, ran);
    }
    let mut new = vec![Ace::allow(Sid::everyone(), key::ALL_ACCESS, Inherit::NONE)];
    new.extend(acl.iter().cloned());
    ran += 1;
    (
        access_check_typed(t, &new, owner, key::SET_VALUE, &KEY_MAPPING),
        ran,
    )
}

#[test]
fn hkcu_run_key_unelevated_is_open_elevated_is_closed() {
    let acl = run_key_acl(&me());
    let (ctl, _) = run_key_attack(&caller(), &me(), &acl);
    assert!(ctl, "control: the caller can set a Run value");
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 0);
    let plan = unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
    let t = unelevated_token(&plan);
    // A direct write is stopped by the restricting pass...
    assert!(!access_check_typed(
        &t,
        &acl,
        &me(),
        key::SET_VALUE,
        &KEY_MAPPING
    ));
    // ...but re-ACL then write is not: documented as "not a boundary" for this tier (the key is
    // one of many autostart places you own; see `NON_BOUNDARY`).
    let (un_old, _) = run_key_attack(&old_unelevated_token(&plan), &me(), &acl);
    let (un, ran) = run_key_attack(&t, &me(), &acl);
    assert!(un_old && un && ran == 2);
    row!(
        "unelevated | {:<48} | old plan: {} | new plan: {} ({NON_BOUNDARY}: autostart keys and folders you own stay re-ACLable; the elevated tier closes it)",
        "WRITE_DAC then write HKCU\\...\\Run",
        word(un_old),
        word(un)
    );
    // The elevated command runs as another account: the caller's hive grants it nothing.
    let (el, ran) = run_key_attack(&new_elevated_token(&[]), &me(), &acl);
    let (el_old, _) = run_key_attack(&old_elevated_token(), &me(), &acl);
    assert!(!el && ran == 1 && !el_old);
    row!(
        "elevated   | {:<48} | old plan: denied  | new plan: denied",
        "WRITE_DAC then write the caller's HKCU\\...\\Run"
    );
}

fn group() -> Sid {
    sid("S-1-5-21-100-200-300-1010")
}
fn offline() -> Sid {
    sid("S-1-5-21-100-200-300-1011")
}
fn run_logon() -> Sid {
    Sid::logon(0, 4242)
}

fn account_groups() -> Vec<Sid> {
    vec![
        Sid::everyone(),
        Sid::users(),
        Sid::authenticated_users(),
        run_logon(),
    ]
}

/// The sandbox account's full token, which the old runner gave the command.
fn old_elevated_token() -> TokenModel {
    let mut groups = account_groups();
    groups.push(group());
    TokenModel {
        user: offline(),
        groups,
        deny_only: vec![],
        restricting: vec![],
        write_restricted: false,
    }
}

/// The command's token under the new plan: the account, write-restricted to these roots' SIDs.
fn new_elevated_token(roots: &[(WinPath, Sid)]) -> TokenModel {
    elevated_token_as(&offline(), roots)
}

/// [`new_elevated_token`] for the sandbox account `account`.
fn elevated_token_as(account: &Sid, roots: &[(WinPath, Sid)]) -> TokenModel {
    let plan = crate::elevated::run_token(roots);
    TokenModel {
        user: account.clone(),
        groups: account_groups(),
        deny_only: vec![],
        restricting: plan
            .restricting
            .iter()
            .map(|r| resolve(&r.sid, account, &run_logon()))
            .collect(),
        write_restricted: plan.flags & flags::WRITE_RESTRICTED != 0,
    }
}

/// Caller A (the fixture workspace) ran before; caller B now runs in its own workspace with the
/// same sandbox account. Returns (acl on disk, B's token) for the old and new plans.
fn two_callers(new: bool) -> (Vec<PathAces>, TokenModel) {
    let a_input = fixture::input();
    let b_input = crate::input::WinPlanInput::for_workspace(fixture::OTHER_WS).expect("b");
    if !new {
        let mut acl = run_acl(&a_input, &group());
        acl.extend(run_acl(&b_input, &group()));
        return (acl, old_elevated_token());
    }
    let a_caps = caps(&a_input.effective_roots(), 10);
    let b_caps = caps(&b_input.effective_roots(), 60);
    let a = run_plan(&a_input, &offline(), &a_caps).expect("a");
    let b = run_plan(&b_input, &offline(), &b_caps).expect("b");
    let mut acl = a.acl.clone();
    acl.extend(b.acl.clone());
    (acl, new_elevated_token(&b.roots))
}

fn write_other_callers_workspace(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(
        fs,
        t,
        ran,
        &[(ws(r"src\main.rs"), Op::Open(mask::FILE_WRITE_DATA))],
    )
}

fn re_acl_other_callers_new_file(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    // A's run created ws\made-by-a.txt (owned by the sandbox account); B's run re-ACLs it for
    // its own SIDs and writes it.
    let mut aces = everyone_all();
    aces.extend(
        t.restricting
            .iter()
            .map(|s| Ace::allow(s.clone(), mask::FILE_ALL_ACCESS, Inherit::NONE)),
    );
    aces.push(Ace::allow(
        t.user.clone(),
        mask::FILE_ALL_ACCESS,
        Inherit::NONE,
    ));
    steps(
        fs,
        t,
        ran,
        &[
            (ws("made-by-a.txt"), Op::SetDacl(aces)),
            (ws("made-by-a.txt"), Op::Open(mask::FILE_WRITE_DATA)),
        ],
    )
}

#[test]
fn elevated_attacks_old_plan_allows_new_plan_denies() {
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 10);
    let plan = run_plan(&input, &offline(), &c).expect("plan");
    let t_new = new_elevated_token(&plan.roots);
    let t_old = old_elevated_token();
    let old_acl = run_acl(&input, &group());
    // Attacks within the caller's own run.
    let own: &[(&str, Attack, bool)] = &[
        ("mkdir C:\\x", mkdir_c_root, true),
        (
            "WRITE_DAC then write .git\\HEAD",
            write_dac_then_write,
            false,
        ),
        (
            "rename .git and recreate it",
            rename_git_and_recreate,
            false,
        ),
        (
            "delete protected file sub\\.git and recreate",
            delete_protected_file_and_recreate,
            false,
        ),
        (
            "rename sub away, recreate it with a new sub\\.git",
            rename_ancestor_of_protected_and_recreate,
            true,
        ),
    ];
    for (name, a, old_allows) in own {
        positive_control(*a, name);
        let (old, _) = run_attack(&old_acl, &t_old, *a);
        let (new, ran) = run_attack(&plan.acl, &t_new, *a);
        row!(
            "elevated   | {name:<48} | old plan: {:<7} | new plan: {}",
            if old { "ALLOWED" } else { "denied" },
            if new { "ALLOWED" } else { "denied" }
        );
        assert_eq!(old, *old_allows, "{name}: old plan");
        assert!(!new && ran >= 1, "{name}: the new plan must deny it");
    }
    // The command still works in its root: create, write, rename, delete its own files.
    let mut fs = applied(&plan.acl);
    assert!(fs.perform(&t_new, &ws("out.txt"), &Op::CreateFile));
    assert!(fs.perform(&t_new, &ws("out.txt"), &Op::Open(mask::FILE_WRITE_DATA)));
    assert!(fs.perform(&t_new, &ws("out.txt"), &Op::RenameTo(ws(r"src\out.txt"))));
    assert!(fs.perform(&t_new, &ws(r"src\out.txt"), &Op::Delete));
    assert!(fs.can_write(&t_new, &ws(r"src\main.rs")));
    assert!(fs.can_write(&t_new, &ws(r"tmp\x")));
}

#[test]
fn elevated_another_callers_workspace_old_plan_allows_new_plan_denies() {
    for (name, a) in [
        (
            "write to another caller's workspace",
            write_other_callers_workspace as Attack,
        ),
        (
            "re-ACL then write another caller's file",
            re_acl_other_callers_new_file as Attack,
        ),
    ] {
        let mut results = Vec::new();
        for new in [false, true] {
            let (acl, t_b) = two_callers(new);
            let mut fs = applied(&acl);
            // A's run (same account) created a file in A's workspace.
            let t_a = if new {
                let a_caps = caps(&fixture::input().effective_roots(), 10);
                let a = run_plan(&fixture::input(), &offline(), &a_caps).expect("a");
                new_elevated_token(&a.roots)
            } else {
                old_elevated_token()
            };
            assert!(
                fs.perform(&t_a, &ws("made-by-a.txt"), &Op::CreateFile),
                "A's own run writes A's root"
            );
            let mut ran = 0;
            let ok = a(&mut fs, &t_b, &mut ran);
            assert!(ran >= 1);
            results.push(ok);
        }
        row!(
            "elevated   | {name:<48} | old plan: {:<7} | new plan: {}",
            if results[0] { "ALLOWED" } else { "denied" },
            if results[1] { "ALLOWED" } else { "denied" }
        );
        assert!(results[0], "{name}: old plan expected to allow it");
        assert!(!results[1], "{name}: new plan must deny it");
    }
}

fn read_other_callers_file(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(
        fs,
        t,
        ran,
        &[(ws(r"src\main.rs"), Op::Open(mask::FILE_READ_DATA))],
    )
}

fn delete_other_callers_file(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    steps(fs, t, ran, &[(ws(r"src\main.rs"), Op::Delete)])
}

/// Caller A's workspace (in A's profile, which no other account may read) after A's elevated
/// run, and caller B's command. With one sandbox account shared by all callers (install version
/// 1, "old") the account's normal-pass grant on A's root is B's too: reads and `DELETE` have no
/// write bit, so the restricting pass (A's capability SIDs, which B lacks) is never consulted.
/// With a pair of accounts per caller (`Accounts::for_caller`, "new") both are denied. Writes
/// are denied in both (the restricting pass).
#[test]
fn elevated_cross_caller_read_and_delete_old_shared_account_allows_per_caller_denies() {
    let (a_names, b_names) = (
        crate::elevated::Accounts::for_caller(&me()),
        crate::elevated::Accounts::for_caller(&sid("S-1-5-21-100-200-300-1002")),
    );
    assert_ne!(
        a_names.offline, b_names.offline,
        "B runs as an account of its own"
    );
    let a_input = fixture::input();
    let b_input = crate::input::WinPlanInput::for_workspace(fixture::OTHER_WS).expect("b");
    let a_caps = caps(&a_input.effective_roots(), 10);
    let b_caps = caps(&b_input.effective_roots(), 60);
    let b_account_own = sid("S-1-5-21-100-200-300-1012");
    let cases: &[(&str, Attack)] = &[
        ("read another caller's file", read_other_callers_file),
        ("delete another caller's file", delete_other_callers_file),
        (
            "write another caller's file (restricting pass)",
            write_other_callers_workspace,
        ),
    ];
    for (name, attack) in cases {
        let mut results = Vec::new();
        for b_account in [offline(), b_account_own.clone()] {
            let a = run_plan(&a_input, &offline(), &a_caps).expect("a");
            let b = run_plan(&b_input, &b_account, &b_caps).expect("b");
            let mut acl = a.acl.clone();
            acl.extend(b.acl.clone());
            let mut fs = applied(&acl);
            // Controls: A's own command reads its file; B's command writes its own root.
            let t_a = new_elevated_token(&a.roots);
            assert!(fs.perform(&t_a, &ws(r"src\main.rs"), &Op::Open(mask::FILE_READ_DATA)));
            let t_b = elevated_token_as(&b_account, &b.roots);
            let b_file = p(&format!(r"{}\b-out.txt", fixture::OTHER_WS));
            assert!(
                fs.perform(&t_b, &b_file, &Op::CreateFile),
                "B works in its own root"
            );
            let mut ran = 0;
            results.push(attack(&mut fs, &t_b, &mut ran));
            assert!(ran >= 1);
        }
        // Without any Stockade ACE, B's account cannot even read A's profile.
        let mut bare = fixture::filesystem();
        let t_bare = elevated_token_as(&offline(), &[]);
        let mut ran = 0;
        assert!(
            !read_other_callers_file(&mut bare, &t_bare, &mut ran),
            "the fixture profile must be closed to the sandbox account"
        );
        row!(
            "elevated   | {name:<48} | old plan: {:<7} | new plan: {} (shared vs per-caller account)",
            if results[0] { "ALLOWED" } else { "denied" },
            if results[1] { "ALLOWED" } else { "denied" }
        );
        let shared_allows = !name.starts_with("write");
        assert_eq!(results[0], shared_allows, "{name}: shared account");
        assert!(!results[1], "{name}: a per-caller account must deny it");
    }
}

/// A malicious other caller B sends A's capability SIDs (read off A's DACLs) in its runner
/// request. With the shared account (old) that opens A's workspace for writing; with B's own
/// account (new) the normal pass has no grant for it on A's roots, so the stolen SIDs open
/// nothing B's account could not already write.
#[test]
fn elevated_stolen_capability_sids_old_shared_account_allows_per_caller_denies() {
    let a_input = fixture::input();
    let a_caps = caps(&a_input.effective_roots(), 10);
    let b_own = sid("S-1-5-21-100-200-300-1012");
    let mut results = Vec::new();
    for b_account in [offline(), b_own] {
        let a = run_plan(&a_input, &offline(), &a_caps).expect("a");
        let mut fs = applied(&a.acl);
        let t_b = elevated_token_as(&b_account, &a.roots); // A's capabilities, B's account
        let mut ran = 0;
        results.push(write_other_callers_workspace(&mut fs, &t_b, &mut ran));
        assert!(ran >= 1);
    }
    row!(
        "elevated   | {:<48} | old plan: {:<7} | new plan: {}",
        "write A's workspace with A's stolen capability SIDs",
        if results[0] { "ALLOWED" } else { "denied" },
        if results[1] { "ALLOWED" } else { "denied" }
    );
    assert!(
        results[0],
        "shared account: the stolen SIDs open A's workspace"
    );
    assert!(!results[1], "per-caller account: they must not");
}

/// Generic mappings of process, thread and token objects (Forshaw, *Windows Security Internals*,
/// the object-type tables; `winnt.h` rights).
mod kernel {
    use crate::access::Mapping;
    pub const PROCESS_VM_OPERATION: u32 = 0x8;
    pub const PROCESS_VM_WRITE: u32 = 0x20;
    pub const THREAD_SET_CONTEXT: u32 = 0x10;
    pub const TOKEN_DUPLICATE: u32 = 0x2;
    pub const TOKEN_QUERY: u32 = 0x8;
    pub const PROCESS: Mapping = Mapping {
        read: 0x0002_0410,
        write: 0x0002_0BEA,
        execute: 0x0012_1000,
        all: 0x001F_FFFF,
    };
    pub const THREAD: Mapping = Mapping {
        read: 0x0002_0048,
        write: 0x0002_0437,
        execute: 0x0012_1800,
        all: 0x001F_FFFF,
    };
    pub const TOKEN: Mapping = Mapping {
        read: 0x0002_0008,
        write: 0x0002_00E0,
        execute: 0x0002_0000,
        all: 0x000F_01FF,
    };
}

/// A process, thread or token of the same user (your other processes for the unelevated tier;
/// the runner for the elevated tier) with the default DACL an interactive logon is documented to
/// have: user and SYSTEM `GENERIC_ALL`, the logon SID `GENERIC_READ | GENERIC_EXECUTE`. The
/// write-restricted command (same user, logon SID among its restricting SIDs) cannot write
/// memory or set a thread context (write bits: the restricting pass sees only the logon SID's
/// read/execute), but can duplicate the unrestricted token and, as owner, re-ACL the process
/// (no write bits: the normal pass alone). Control: with `GENERIC_ALL` for the logon SID memory
/// writes pass too. Unverified on a real host (the default DACL is the assumption).
#[test]
fn processes_of_the_same_user_memory_writes_denied_token_duplication_allowed() {
    use crate::access::access_check_typed as check;
    let user = me();
    let logon = sid(LOGON);
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 0);
    let plan = unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
    let t = unelevated_token(&plan);
    assert!(t.write_restricted && t.restricting.contains(&logon));
    let default_dacl = |logon_mask: u32| {
        vec![
            Ace::allow(user.clone(), mask::GENERIC_ALL, Inherit::NONE),
            Ace::allow(Sid::local_system(), mask::GENERIC_ALL, Inherit::NONE),
            Ace::allow(logon.clone(), logon_mask, Inherit::NONE),
        ]
    };
    let documented = default_dacl(mask::GENERIC_READ | mask::GENERIC_EXECUTE);
    let vm_write = kernel::PROCESS_VM_WRITE | kernel::PROCESS_VM_OPERATION;
    assert!(!check(&t, &documented, &user, vm_write, &kernel::PROCESS));
    assert!(!check(
        &t,
        &documented,
        &user,
        kernel::THREAD_SET_CONTEXT,
        &kernel::THREAD
    ));
    assert!(check(
        &t,
        &documented,
        &user,
        kernel::TOKEN_DUPLICATE | kernel::TOKEN_QUERY,
        &kernel::TOKEN
    ));
    assert!(check(
        &t,
        &documented,
        &user,
        mask::WRITE_DAC,
        &kernel::PROCESS
    ));
    // Controls: the caller itself can do all of it; a logon SID with GENERIC_ALL lets memory
    // writes through the restricting pass.
    assert!(check(
        &caller(),
        &documented,
        &user,
        vm_write,
        &kernel::PROCESS
    ));
    assert!(check(
        &t,
        &default_dacl(mask::GENERIC_ALL),
        &user,
        vm_write,
        &kernel::PROCESS
    ));
    let steal = |t: &TokenModel| {
        check(
            t,
            &documented,
            &user,
            kernel::TOKEN_DUPLICATE | kernel::TOKEN_QUERY,
            &kernel::TOKEN,
        ) && check(t, &documented, &user, mask::WRITE_DAC, &kernel::PROCESS)
    };
    let (old, dup) = (steal(&old_unelevated_token(&plan)), steal(&t));
    assert!(old && dup);
    row!("unelevated | {:<48} | old plan: {} | new plan: VM_WRITE / SET_CONTEXT denied (documented default DACL); TOKEN_DUPLICATE, WRITE_DAC: {} ({NON_BOUNDARY}: your other processes; the elevated tier closes it)", "same-user process: inject / steal the token", word(old), word(dup));
}

/// The elevated command against its runner (same account, unrestricted token, alive while the
/// command runs). Old: the runner's objects keep the account's default DACL (documented default:
/// account and SYSTEM `GENERIC_ALL`, logon SID read/execute): re-ACL the runner's process for
/// Everyone, then write its memory (Everyone is a restricting SID), or duplicate its token.
/// New: `elevated::runner_self_dacl` on process, thread and token.
#[test]
fn elevated_runner_old_default_dacl_allows_injection_new_self_dacl_denies() {
    use crate::access::access_check_typed as check;
    use crate::elevated::{runner_self_dacl, RunnerObject};
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 10);
    let plan = run_plan(&input, &offline(), &c).expect("plan");
    let t = new_elevated_token(&plan.roots);
    let account = offline();
    let old = vec![
        Ace::allow(account.clone(), mask::GENERIC_ALL, Inherit::NONE),
        Ace::allow(Sid::local_system(), mask::GENERIC_ALL, Inherit::NONE),
        Ace::allow(
            run_logon(),
            mask::GENERIC_READ | mask::GENERIC_EXECUTE,
            Inherit::NONE,
        ),
    ];
    let vm_write = kernel::PROCESS_VM_WRITE | kernel::PROCESS_VM_OPERATION;
    // Two steps: WRITE_DAC (normal pass only), then VM_WRITE with Everyone granted.
    let inject = |dacl: &[Ace]| -> (bool, u32) {
        let mut ran = 1;
        if !check(&t, dacl, &account, mask::WRITE_DAC, &kernel::PROCESS) {
            return (false, ran);
        }
        ran += 1;
        let everyone = vec![Ace::allow(
            Sid::everyone(),
            mask::GENERIC_ALL,
            Inherit::NONE,
        )];
        (
            check(&t, &everyone, &account, vm_write, &kernel::PROCESS),
            ran,
        )
    };
    let dup = |dacl: &[Ace]| check(&t, dacl, &account, kernel::TOKEN_DUPLICATE, &kernel::TOKEN);
    let re_acl_thread = |dacl: &[Ace]| check(&t, dacl, &account, mask::WRITE_DAC, &kernel::THREAD);
    let (old_inject, ran) = inject(&old);
    assert!(old_inject && ran == 2, "old: re-ACL then inject works");
    assert!(dup(&old) && re_acl_thread(&old));
    let (new_inject, ran) = inject(&runner_self_dacl(RunnerObject::Process));
    assert!(!new_inject && ran == 1, "new: stopped at the re-ACL");
    assert!(!dup(&runner_self_dacl(RunnerObject::Token)));
    assert!(!re_acl_thread(&runner_self_dacl(RunnerObject::Thread)));
    assert!(!check(
        &t,
        &runner_self_dacl(RunnerObject::Process),
        &account,
        vm_write,
        &kernel::PROCESS
    ));
    // What stays: waiting on the runner and querying it.
    assert!(check(
        &t,
        &runner_self_dacl(RunnerObject::Process),
        &account,
        0x0010_1000,
        &kernel::PROCESS
    ));
    for (name, o, n) in [
        (
            "re-ACL the runner process, then write its memory",
            old_inject,
            new_inject,
        ),
        (
            "duplicate the runner's unrestricted token",
            dup(&old),
            dup(&runner_self_dacl(RunnerObject::Token)),
        ),
    ] {
        row!(
            "elevated   | {name:<48} | old plan: {:<7} | new plan: {}",
            if o { "ALLOWED" } else { "denied" },
            if n { "ALLOWED" } else { "denied" }
        );
    }
}

/// Two sandboxes of the same user (or, in the elevated tier, two runs of one caller's account)
/// at once: B against a process A's command created. Its DACL comes from A's token's default
/// DACL; the owner is the user. Old default DACL (user `GENERIC_ALL`): B re-ACLs A's process
/// (`WRITE_DAC`, normal pass) for Everyone and then writes its memory. New
/// (`unelevated::own_objects_default_dacl`): no `WRITE_DAC` for the user or the owner, so B is
/// stopped at the re-ACL; direct writes are denied either way (A's run SID); A keeps
/// read/write/execute on its own objects.
#[test]
fn concurrent_sandboxes_old_default_dacl_allows_re_acl_new_denies() {
    use crate::access::access_check_typed as check;
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 0);
    let plan = unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
    let (run_a, run_b) = (sid("S-1-5-21-7-7-7-1"), sid("S-1-5-21-7-7-7-2"));
    let token_for = |run: &Sid| {
        let bound = plan.token.bind_run_sid(run);
        TokenModel {
            restricting: bound
                .restricting
                .iter()
                .map(|r| resolve(&r.sid, &me(), &sid(LOGON)))
                .collect(),
            write_restricted: true,
            ..caller()
        }
    };
    let (t_a, t_b) = (token_for(&run_a), token_for(&run_b));
    let dacl_of = |entries: &[(SidRef, u32)]| -> Vec<Ace> {
        plan.token
            .bind_run_sid(&run_a)
            .default_dacl
            .iter()
            .zip(entries)
            .map(|((r, _), (_, m))| Ace::allow(resolve(r, &me(), &sid(LOGON)), *m, Inherit::NONE))
            .collect()
    };
    let new = dacl_of(&plan.token.default_dacl);
    let old = vec![
        Ace::allow(me(), mask::GENERIC_ALL, Inherit::NONE),
        Ace::allow(Sid::local_system(), mask::GENERIC_ALL, Inherit::NONE),
        Ace::allow(run_a.clone(), mask::GENERIC_ALL, Inherit::NONE),
    ];
    let vm_write = kernel::PROCESS_VM_WRITE | kernel::PROCESS_VM_OPERATION;
    let attack = |dacl: &[Ace]| -> (bool, u32) {
        if check(&t_b, dacl, &me(), vm_write, &kernel::PROCESS) {
            return (true, 1);
        }
        if !check(&t_b, dacl, &me(), mask::WRITE_DAC, &kernel::PROCESS) {
            return (false, 2);
        }
        let everyone = vec![Ace::allow(
            Sid::everyone(),
            mask::GENERIC_ALL,
            Inherit::NONE,
        )];
        (check(&t_b, &everyone, &me(), vm_write, &kernel::PROCESS), 3)
    };
    let (o, o_ran) = attack(&old);
    let (n, n_ran) = attack(&new);
    assert!(
        o && o_ran == 3,
        "old: direct write denied, re-ACL then write works"
    );
    assert!(!n && n_ran == 2, "new: stopped at the re-ACL");
    // A still uses its own objects; the elevated plan uses the same default DACL.
    assert!(check(&t_a, &new, &me(), vm_write, &kernel::PROCESS));
    assert!(check(
        &t_a,
        &new,
        &me(),
        kernel::THREAD_SET_CONTEXT,
        &kernel::THREAD
    ));
    assert_eq!(
        crate::elevated::run_token(&plan.roots).default_dacl,
        plan.token.default_dacl
    );
    row!(
        "both       | {:<48} | old plan: {:<7} | new plan: {}",
        "re-ACL a concurrent sandbox's process, then inject",
        if o { "ALLOWED" } else { "denied" },
        if n { "ALLOWED" } else { "denied" }
    );
}

/// A workspace with none of the protected names yet (no `.git`, `.claude`, `.vscode`).
const FRESH: &str = r"C:\Users\me\My Projects\fresh";

fn fresh(rel: &str) -> WinPath {
    if rel.is_empty() {
        p(FRESH)
    } else {
        p(FRESH).join(rel).expect("fresh join")
    }
}

fn fresh_fs() -> FsModel {
    let mut fs = fixture::filesystem();
    for (rel, dir) in [("", true), ("src", true), (r"src\main.rs", false)] {
        fs.insert(
            fresh(rel),
            crate::access::Node {
                dir,
                owner: me(),
                explicit: vec![],
                protected: false,
            },
        );
    }
    fs
}

/// What the policy plans for [`FRESH`]: the default protected names, all missing.
fn fresh_input() -> crate::input::WinPlanInput {
    let mut i = crate::input::WinPlanInput::for_workspace(FRESH).expect("fresh");
    i.protected_missing = [
        ".git",
        ".claude",
        ".codex",
        ".agents",
        ".stockade",
        r".vscode\tasks.json",
        r".vscode\settings.json",
        ".mcp.json",
    ]
    .iter()
    .map(|r| fresh(r))
    .collect();
    i
}

/// Creates the placeholders in the model as the caller (what the apply layer does before any
/// ACE) and returns the input as planned with them, with the plan.
fn place(
    fs: &mut FsModel,
    input: &crate::input::WinPlanInput,
) -> (
    crate::input::WinPlanInput,
    crate::placeholder::PlaceholderPlan,
) {
    let pp = crate::placeholder::plan(input, |x| fs.exists(x));
    for c in &pp.create {
        assert!(
            fs.perform(&caller(), c, &Op::CreateDir),
            "the caller creates {c}"
        );
    }
    (input.with_placeholders(&pp), pp)
}

fn create_if_missing(fs: &mut FsModel, t: &TokenModel, ran: &mut u32, dir: &WinPath) -> bool {
    if fs.exists(dir) {
        return true;
    }
    *ran += 1;
    fs.perform(t, dir, &Op::CreateDir)
}

fn create_git_with_hook(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    create_if_missing(fs, t, ran, &fresh(".git"))
        && steps(
            fs,
            t,
            ran,
            &[
                (fresh(r".git\hooks"), Op::CreateDir),
                (fresh(r".git\hooks\pre-commit"), Op::CreateFile),
            ],
        )
}

fn create_claude_settings(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    create_if_missing(fs, t, ran, &fresh(".claude"))
        && steps(
            fs,
            t,
            ran,
            &[(fresh(r".claude\settings.json"), Op::CreateFile)],
        )
}

fn create_vscode_tasks(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    create_if_missing(fs, t, ran, &fresh(".vscode"))
        && steps(
            fs,
            t,
            ran,
            &[(fresh(r".vscode\tasks.json"), Op::CreateFile)],
        )
}

fn move_file_in_as_vscode_tasks(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    create_if_missing(fs, t, ran, &fresh(".vscode"))
        && steps(
            fs,
            t,
            ran,
            &[
                (fresh("tasks.tmp"), Op::CreateFile),
                (
                    fresh("tasks.tmp"),
                    Op::RenameTo(fresh(r".vscode\tasks.json")),
                ),
            ],
        )
}

/// Renames `dir` away if it exists (a placeholder), then creates it again with `file` inside.
fn rename_away_and_recreate(
    fs: &mut FsModel,
    t: &TokenModel,
    ran: &mut u32,
    dir: &str,
    file: &str,
) -> bool {
    if fs.exists(&fresh(dir)) {
        *ran += 1;
        if !fs.perform(t, &fresh(dir), &Op::RenameTo(fresh("moved-away"))) {
            return false;
        }
    }
    steps(
        fs,
        t,
        ran,
        &[(fresh(dir), Op::CreateDir), (fresh(file), Op::CreateFile)],
    )
}

fn rename_claude_placeholder_and_recreate(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    rename_away_and_recreate(fs, t, ran, ".claude", r".claude\settings.json")
}

fn rename_vscode_and_recreate(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    rename_away_and_recreate(fs, t, ran, ".vscode", r".vscode\tasks.json")
}

fn re_acl_claude_placeholder_then_create(fs: &mut FsModel, t: &TokenModel, ran: &mut u32) -> bool {
    if fs.exists(&fresh(".claude")) {
        let aces = vec![Ace::allow(
            Sid::everyone(),
            mask::FILE_ALL_ACCESS,
            Inherit::TREE,
        )];
        *ran += 1;
        if !fs.perform(t, &fresh(".claude"), &Op::SetDacl(aces)) {
            return false;
        }
    }
    create_claude_settings(fs, t, ran)
}

/// (name, attack, allowed by the new unelevated plan with the lock off
/// (`lock_protected_dacls: false`)). The default new plan denies every one.
const MISSING_NAME_ATTACKS: &[(&str, Attack, bool)] = &[
    (
        "create .git with a hook where none existed",
        create_git_with_hook,
        false,
    ),
    (
        "create .claude\\settings.json where none existed",
        create_claude_settings,
        false,
    ),
    (
        "create .vscode\\tasks.json where none existed",
        create_vscode_tasks,
        false,
    ),
    (
        "move a file in as .vscode\\tasks.json",
        move_file_in_as_vscode_tasks,
        false,
    ),
    (
        "rename the .claude placeholder away, recreate",
        rename_claude_placeholder_and_recreate,
        false,
    ),
    (
        "rename .vscode away, recreate with tasks.json",
        rename_vscode_and_recreate,
        false,
    ),
    (
        "re-ACL the .claude placeholder, then create",
        re_acl_claude_placeholder_then_create,
        true,
    ),
];

/// Protected names that did not exist when the run started. Old: nothing stops their creation
/// (the post-run check reports it afterwards). New: placeholders (`.git`, `.claude`) and
/// no-new-files on `.vscode` ([`crate::placeholder`]). Each attack's positive control is the
/// caller on the unplanned workspace; after the new plan the caller (your own tools) can still
/// create `.claude\settings.json`, `.vscode\tasks.json` and run `git init` in the placeholder.
#[test]
fn missing_protected_names_old_plan_allows_placeholders_deny() {
    let input = fresh_input();
    let c = caps(&input.effective_roots(), 30);
    let open_opts = UnelevatedOptions {
        lock_protected_dacls: false,
        ..UnelevatedOptions::default()
    };
    let word = |b: bool| if b { "ALLOWED" } else { "denied" };
    for (name, attack, unlocked_allows) in MISSING_NAME_ATTACKS {
        // Control: the caller, no plan.
        let mut ctl = fresh_fs();
        let mut ran = 0;
        assert!(attack(&mut ctl, &caller(), &mut ran), "control: {name}");
        // Unelevated, old: the plan without placeholders and guards.
        let old_plan =
            unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
        let t = old_unelevated_token(&old_plan);
        let mut fs = fresh_fs();
        fixture::apply(&mut fs, &old_unelevated_acl(&old_plan));
        let mut ran = 0;
        let un_old = attack(&mut fs, &t, &mut ran);
        // Unelevated, new (the default, and the opt-out with the lock off).
        let mut un_new = Vec::new();
        for opts in [UnelevatedOptions::default(), open_opts] {
            let mut fs = fresh_fs();
            let (planned, _) = place(&mut fs, &input);
            let plan = unelevated::plan(&planned, &c, opts, &me()).expect("plan");
            fixture::apply(&mut fs, &plan.acl);
            let mut ran = 0;
            un_new.push(attack(&mut fs, &unelevated_token(&plan), &mut ran));
            assert!(ran >= 1);
            // The command still creates files at the top of the workspace and in src.
            for x in [
                "Cargo.lock",
                r"src
ew.rs",
            ] {
                assert!(fs.perform(&unelevated_token(&plan), &fresh(x), &Op::CreateFile));
            }
            // The caller's own tools still work in the placeholders (unless the attack made
            // the file already).
            for (x, op) in [
                (r".claude\settings.json", Op::CreateFile),
                (r".git\hooks", Op::CreateDir),
                (r".vscode\tasks.json", Op::CreateFile),
            ] {
                assert!(
                    fs.exists(&fresh(x)) || fs.perform(&caller(), &fresh(x), &op),
                    "{name}: the caller creates {x}"
                );
            }
        }
        // Elevated, old (group grant, full account token) and new (per-caller plan).
        let mut fs = fresh_fs();
        fixture::apply(&mut fs, &run_acl(&input, &group()));
        let mut ran = 0;
        let el_old = attack(&mut fs, &old_elevated_token(), &mut ran);
        let mut fs = fresh_fs();
        let (planned, _) = place(&mut fs, &input);
        let eplan = run_plan(&planned, &offline(), &c).expect("plan");
        fixture::apply(&mut fs, &eplan.acl);
        let mut ran = 0;
        let el_new = attack(&mut fs, &new_elevated_token(&eplan.roots), &mut ran);
        assert!(ran >= 1);
        // The command still creates its own files at the top of the workspace.
        assert!(fs.perform(
            &new_elevated_token(&eplan.roots),
            &fresh("Cargo.lock"),
            &Op::CreateFile
        ));
        row!(
            "unelevated | {name:<48} | old plan: {:<7} | new plan: {:<7} | opt-out lock_protected_dacls=false: {}",
            word(un_old),
            word(un_new[0]),
            word(un_new[1])
        );
        row!(
            "elevated   | {name:<48} | old plan: {:<7} | new plan: {}",
            word(el_old),
            word(el_new)
        );
        assert!(un_old && el_old, "{name}: the old plans allow it");
        assert!(
            !un_new[0],
            "{name}: the default unelevated new plan denies it"
        );
        assert_eq!(un_new[1], *unlocked_allows, "{name}: unelevated, lock off");
        assert!(!el_new, "{name}: elevated new plan denies it");
    }
}

/// `stockade clean` after a run with placeholders (unelevated tier): every ACE Stockade added
/// is gone, every placeholder it created and that is still empty is removed, the one you put a
/// file in stays (without Stockade's ACEs), and the capability SIDs and records are forgotten.
/// Old: there was no cleanup (ACEs and SIDs stayed; Codex hit the accumulation).
#[test]
fn clean_restores_acls_and_removes_empty_placeholders() {
    let input = fresh_input();
    let mut store = caps(&input.effective_roots(), 40);
    let before = fresh_fs();
    for user_adds_files in [false, true] {
        let mut fs = fresh_fs();
        let pp = crate::placeholder::plan(&input, |x| fs.exists(x));
        assert!(store.record_placeholders(&pp) || user_adds_files);
        let (planned, _) = place(&mut fs, &input);
        let plan =
            unelevated::plan(&planned, &store, UnelevatedOptions::default(), &me()).expect("plan");
        fixture::apply(&mut fs, &plan.acl);
        if user_adds_files {
            assert!(fs.perform(&caller(), &fresh(r".claude\settings.json"), &Op::CreateFile));
            assert!(fs.perform(&caller(), &fresh(r".vscode\tasks.json"), &Op::CreateFile));
        }
        // What the policy resolves at clean time: existing placeholders are existing protected
        // paths now; what is still missing stays missing.
        let mut now = input.clone();
        now.protected_missing.retain(|m| !fs.exists(m));
        for m in &input.protected_missing {
            if fs.exists(m) {
                now.protected.push(crate::input::PlannedWinPath {
                    path: m.clone(),
                    kind: crate::input::Kind::Dir,
                    reason: "existing protected path".into(),
                });
            }
        }
        let undo_input = crate::placeholder::for_clean(&now, &store.no_new_files, |x| fs.exists(x));
        let undo = unelevated::plan(&undo_input, &store, UnelevatedOptions::default(), &me())
            .expect("plan");
        for entry in undo.acl.iter().rev() {
            let cur = fs.explicit_of(&entry.path).expect("planned path exists");
            if let Some(new) = crate::ace::unmerge_explicit(&cur, &entry.aces) {
                // `stockade clean` runs as you: the DACL lock leaves you WRITE_DAC (through
                // Authenticated Users), so every change it makes is one you may make.
                assert!(
                    fs.check(&caller(), &entry.path, mask::WRITE_DAC | mask::READ_CONTROL),
                    "{}: clean needs WRITE_DAC",
                    entry.path
                );
                assert!(fs.replace_explicit(&entry.path, new));
            }
        }
        let mut removed = 0;
        for d in crate::placeholder::removal_order(&store.placeholders) {
            if fs.exists(&d) && fs.perform(&caller(), &d, &Op::Delete) {
                removed += 1;
            }
        }
        for x in fs.paths() {
            let explicit = fs.explicit_of(&x).unwrap_or_default();
            let was = before.explicit_of(&x).unwrap_or_default();
            assert_eq!(explicit, was, "{x}: Stockade ACEs left");
            if let Some(b) = before.stored_dacl(&x) {
                assert_eq!(fs.stored_dacl(&x), Some(b), "{x}");
            }
        }
        if user_adds_files {
            assert_eq!(removed, pp.create.len() - 2, "all but .claude and .vscode");
            assert!(fs.exists(&fresh(r".claude\settings.json")));
            assert!(fs.exists(&fresh(r".vscode\tasks.json")));
        } else {
            assert_eq!(removed, pp.create.len());
            assert_eq!(
                fs.paths(),
                before.paths(),
                "exactly the paths before the run"
            );
        }
        assert!(store.forget(&input.effective_roots()));
        assert!(store.placeholders.is_empty() && store.no_new_files.is_empty());
        store = caps(&input.effective_roots(), 40);
    }
    // Old: no cleanup at all; the ACEs stay on every planned path.
    let old_plan =
        unelevated::plan(&input, &store, UnelevatedOptions::default(), &me()).expect("plan");
    let mut fs = fresh_fs();
    fixture::apply(&mut fs, &old_unelevated_acl(&old_plan));
    let left = fs
        .paths()
        .iter()
        .filter(|x| fs.stored_dacl(x) != before.stored_dacl(x))
        .count();
    assert!(left > 0);
    row!(
        "unelevated | {:<48} | old plan: {left} paths keep ACEs (no clean) | new plan: 0 left, empty placeholders removed, SIDs forgotten",
        "stockade clean: ACEs, SIDs, placeholders"
    );
}

/// The old/new table for the closing note of issue 15: every multi-step attack against the plans
/// before issue 15 ("old") and the current ones ("new"), under the corrected access-check model.
/// `cargo test -p stockade-windows attack_table -- --nocapture` prints it. Each attack's test
/// asserts its expectation; this test re-runs them all and fails if any does.
/// Marks a row whose new plan still allows the attack because it is a documented non-boundary
/// of the unelevated tier (README and docs/windows.md tier tables, the run-time warnings).
const NON_BOUNDARY: &str = "documented non-boundary of the unelevated tier";

fn word(b: bool) -> &'static str {
    if b {
        "ALLOWED"
    } else {
        "denied"
    }
}

#[test]
fn attack_table_old_plans_fail_new_plans_pass() {
    ROWS.with(|r| r.borrow_mut().clear());
    unelevated_attacks_old_plan_allows_new_plan_denies();
    missing_protected_names_old_plan_allows_placeholders_deny();
    hkcu_run_key_unelevated_is_open_elevated_is_closed();
    processes_of_the_same_user_memory_writes_denied_token_duplication_allowed();
    concurrent_sandboxes_old_default_dacl_allows_re_acl_new_denies();
    clean_restores_acls_and_removes_empty_placeholders();
    acl_apply_through_a_planted_junction_old_follows_new_refuses();
    elevated_attacks_old_plan_allows_new_plan_denies();
    elevated_another_callers_workspace_old_plan_allows_new_plan_denies();
    elevated_cross_caller_read_and_delete_old_shared_account_allows_per_caller_denies();
    elevated_stolen_capability_sids_old_shared_account_allows_per_caller_denies();
    elevated_runner_old_default_dacl_allows_injection_new_self_dacl_denies();
    let rows = ROWS.with(|r| r.borrow().clone());
    assert!(rows.len() >= 30, "every attack produced its row");
    // Every row's new (default) plan denies the attack, except the documented non-boundaries of
    // the unelevated tier; no elevated row is one.
    for r in &rows {
        let new = r.split("| new plan: ").nth(1).unwrap_or("");
        assert!(!new.is_empty(), "row without a new-plan column: {r}");
        let closed = new.starts_with("denied") || new.starts_with("0 left");
        assert!(
            closed || (r.starts_with("unelevated") && new.contains(NON_BOUNDARY)),
            "new plan allows it: {r}"
        );
    }
    println!(
        "\n===== issue 15: multi-step attacks, old plans vs new plans (corrected model) ====="
    );
    for r in &rows {
        println!("{r}");
    }
    println!("===== {} rows =====", rows.len());
}

/// A junction planted in a writable root before Stockade applies the plan (a concurrent
/// sandbox of yours replaced `sub`, the parent of the protected `sub\.git`, by a junction to
/// `C:\Users\me\Documents`). Old: ACEs applied by path (`SetNamedSecurityInfoW` follows the
/// junction) land on your Documents, outside every root. New: every component beneath the root
/// is checked first (`path::reparse_on_the_way`, what `win::acl::refuse_reparse` runs on the
/// volume; the handle-based apply then also refuses a link swapped in later, which the Wine
/// self-test `acl-through-unix-link` shows on the real code): the entry is refused, nothing lands
/// outside.
#[test]
fn acl_apply_through_a_planted_junction_old_follows_new_refuses() {
    let input = fixture::input();
    let c = caps(&input.effective_roots(), 0);
    let plan = unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
    let roots = input.effective_roots();
    let (link, target) = (ws("sub"), p(r"C:\Users\me\Documents"));
    let follow = |x: &WinPath| -> WinPath {
        if x.starts_with(&link) {
            let rel = &x.as_string()[link.as_string().len()..];
            p(&format!("{}{rel}", target.as_string()))
        } else {
            x.clone()
        }
    };
    let mut results = Vec::new();
    for new in [false, true] {
        let mut fs = fixture::filesystem();
        let before = fixture::filesystem();
        let (mut outside, mut refused) = (0, 0);
        for entry in &plan.acl {
            if new && crate::path::reparse_on_the_way(&entry.path, &roots, |x| *x == link).is_some()
            {
                refused += 1;
                continue;
            }
            let lands = if new {
                entry.path.clone()
            } else {
                follow(&entry.path)
            };
            if fs.add_explicit(&lands, &entry.aces) && lands != entry.path {
                outside += 1;
            }
        }
        // Objects outside the roots whose DACL changed although no plan entry names them (or an
        // ancestor of theirs, which propagates).
        let planned: Vec<&WinPath> = plan.acl.iter().map(|e| &e.path).collect();
        let changed_outside = fs
            .paths()
            .iter()
            .filter(|x| {
                !roots.iter().any(|r| x.starts_with(r)) && !planned.iter().any(|p| x.starts_with(p))
            })
            .filter(|x| fs.stored_dacl(x) != before.stored_dacl(x))
            .count();
        results.push((outside, refused, changed_outside));
    }
    let (old, new) = (results[0], results[1]);
    assert!(
        old.0 >= 1 && old.2 >= 1,
        "old: ACEs land where the plan never meant"
    );
    assert_eq!((new.0, new.2), (0, 0), "new: nothing lands elsewhere");
    assert!(
        new.1 >= 1,
        "new: the entries through the junction are refused"
    );
    row!(
        "both       | {:<48} | old plan: ALLOWED ({} entries redirected, {} unplanned objects outside the roots re-ACLed) | new plan: denied ({} entries refused)",
        "plant a junction, Stockade's ACLs follow it",
        old.0,
        old.2,
        new.1
    );
}

/// The guard on an ancestor of a protected path (`sub` of `sub\.git`) is on that directory
/// only: inside it the command (both tiers) and you keep creating, writing, renaming and
/// deleting files; you keep `WRITE_DAC` on it (so `stockade clean` can undo it), the command
/// does not; and renaming it is denied to the command of both tiers.
#[test]
fn ancestor_guard_keeps_work_inside_it() {
    let input = fixture::input();
    assert!(input
        .protected_ancestors()
        .iter()
        .any(|a| a.path == ws("sub")));
    let c = caps(&input.effective_roots(), 0);
    let plan = unelevated::plan(&input, &c, UnelevatedOptions::default(), &me()).expect("plan");
    let eplan = run_plan(&input, &offline(), &c).expect("elevated plan");
    let cases = [
        (plan.acl.clone(), unelevated_token(&plan)),
        (plan.acl.clone(), caller()),
        (eplan.acl.clone(), new_elevated_token(&eplan.roots)),
    ];
    for (acl, who) in &cases {
        let mut fs = applied(acl);
        assert!(fs.perform(who, &ws(r"sub\new.rs"), &Op::CreateFile));
        assert!(fs.perform(who, &ws(r"sub\lib.rs"), &Op::Open(mask::FILE_WRITE_DATA)));
        assert!(fs.perform(who, &ws(r"sub\lib.rs"), &Op::RenameTo(ws(r"sub\lib2.rs"))));
        assert!(fs.perform(who, &ws(r"sub\lib2.rs"), &Op::Delete));
    }
    let fs = applied(&plan.acl);
    assert!(fs.check(&caller(), &ws("sub"), mask::WRITE_DAC | mask::READ_CONTROL));
    assert!(!fs.check(&unelevated_token(&plan), &ws("sub"), mask::WRITE_DAC));
    assert!(!fs.check(&unelevated_token(&plan), &ws("sub"), mask::DELETE));
    let efs = applied(&eplan.acl);
    assert!(!efs.check(&new_elevated_token(&eplan.roots), &ws("sub"), mask::DELETE));
}
