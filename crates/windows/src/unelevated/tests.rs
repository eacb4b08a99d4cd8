use super::*;
use crate::access::{access_check, FsModel, Op, TokenModel};
use crate::fixture::{self, me, p, sid, ws, LOGON};

fn rng_from(seed: u8) -> impl FnMut() -> [u8; 16] {
    let mut n = seed;
    move || {
        n = n.wrapping_add(1);
        [n; 16]
    }
}

fn caps_for(input: &WinPlanInput) -> CapabilityStore {
    let mut caps = CapabilityStore::default();
    caps.ensure(&input.effective_roots(), rng_from(0))
        .expect("caps");
    caps
}

fn resolve(r: &SidRef) -> Sid {
    match r {
        SidRef::Fixed(s) => s.clone(),
        SidRef::LogonSession => sid(LOGON),
        SidRef::CurrentUser => me(),
        SidRef::RunSession => sid("S-1-5-21-77-77-77-77"),
    }
}

/// The token the apply layer builds from the caller's token with this plan.
fn sandbox_token(plan: &UnelevatedPlan) -> TokenModel {
    TokenModel {
        user: me(),
        groups: [
            Sid::everyone(),
            Sid::users(),
            Sid::authenticated_users(),
            Sid::interactive(),
            sid(LOGON),
        ]
        .into_iter()
        .filter(|g| !plan.token.deny_only.contains(g))
        .collect(),
        deny_only: plan.token.deny_only.clone(),
        restricting: plan
            .token
            .restricting
            .iter()
            .map(|r| resolve(&r.sid))
            .collect(),
        write_restricted: plan.token.flags & flags::WRITE_RESTRICTED != 0,
    }
}

fn caller_token() -> TokenModel {
    TokenModel {
        restricting: vec![],
        write_restricted: false,
        ..sandbox_token_empty()
    }
}

fn sandbox_token_empty() -> TokenModel {
    TokenModel {
        user: me(),
        groups: vec![
            Sid::everyone(),
            Sid::users(),
            Sid::authenticated_users(),
            Sid::interactive(),
            sid(LOGON),
        ],
        deny_only: vec![],
        restricting: vec![],
        write_restricted: false,
    }
}

fn planned_fs(input: &WinPlanInput) -> (UnelevatedPlan, FsModel) {
    let plan = plan(input, &caps_for(input), UnelevatedOptions::default(), &me()).expect("plan");
    let mut fs = fixture::filesystem();
    fixture::apply(&mut fs, &plan.acl);
    (plan, fs)
}

fn expected_writable(input: &WinPlanInput, path: &WinPath) -> bool {
    input.effective_roots().iter().any(|r| path.starts_with(r))
        && !input.protected.iter().any(|pp| path.starts_with(&pp.path))
}

#[test]
fn token_plan_is_write_restricted_with_capabilities_logon_and_everyone() {
    let input = fixture::input();
    let caps = caps_for(&input);
    let plan = plan(&input, &caps, UnelevatedOptions::default(), &me()).expect("plan");
    assert_eq!(
        plan.token.flags,
        flags::WRITE_RESTRICTED | flags::DISABLE_MAX_PRIVILEGE | flags::LUA_TOKEN
    );
    let ws_sid = caps.sid_for(&ws("")).cloned().expect("ws sid");
    assert_eq!(
        plan.token
            .restricting
            .iter()
            .map(|r| r.sid.clone())
            .collect::<Vec<_>>(),
        vec![
            SidRef::Fixed(ws_sid),
            SidRef::LogonSession,
            SidRef::RunSession,
            SidRef::Fixed(Sid::everyone())
        ]
    );
    // The child's own objects (pipes it creates) are open to it through the logon SID.
    assert!(plan
        .token
        .default_dacl
        .contains(&(SidRef::RunSession, mask::GENERIC_ALL)));
    // ...and not through the logon SID, which concurrent sandboxes share.
    assert!(plan
        .token
        .default_dacl
        .iter()
        .all(|(s, _)| *s != SidRef::LogonSession));
    let bound = plan.token.bind_run_sid(&sid("S-1-5-21-5-5-5-5"));
    assert!(bound
        .restricting
        .iter()
        .any(|r| r.sid == SidRef::Fixed(sid("S-1-5-21-5-5-5-5"))));
    assert!(!bound
        .restricting
        .iter()
        .any(|r| r.sid == SidRef::RunSession));
    assert!(plan
        .token
        .default_dacl
        .iter()
        .all(|(s, _)| *s != SidRef::Fixed(Sid::everyone())));
}

#[test]
fn root_aces_never_grant_delete_child_and_protected_aces_deny_writes() {
    let (plan, _) = planned_fs(&fixture::input());
    let root = &plan.acl[0];
    assert_eq!(root.path, ws(""));
    assert_eq!(root.aces.len(), 1);
    assert_eq!(root.aces[0].inherit, Inherit::TREE);
    assert_eq!(root.aces[0].mask & mask::FILE_DELETE_CHILD, 0);
    assert_eq!(root.aces[0].mask & (mask::WRITE_DAC | mask::WRITE_OWNER), 0);
    for pa in plan.acl[1..]
        .iter()
        .filter(|a| !a.reason.starts_with(GUARD_REASON))
    {
        assert!(pa
            .aces
            .iter()
            .all(|a| a.kind == crate::ace::AceKind::Deny && a.mask == mask::PROTECT_DENY));
        let expect = if pa.kind == Kind::Dir {
            Inherit::TREE
        } else {
            Inherit::NONE
        };
        assert!(pa.aces.iter().all(|a| a.inherit == expect), "{}", pa.path);
    }
    // The gitdir outside the workspace needs no ACE: nothing grants the sandbox write there.
    assert_eq!(
        plan.protected_outside_roots,
        vec![p(r"C:\Users\me\gitdirs\wt")]
    );
}

#[test]
fn sandbox_writes_exactly_writable_roots_minus_protected_paths() {
    let input = fixture::input();
    let (plan, fs) = planned_fs(&input);
    let t = sandbox_token(&plan);
    let caller = caller_token();
    let mut checked = 0;
    for path in fixture::probes() {
        if path.starts_with(&p(r"C:\Everyone Writable")) {
            continue;
        }
        let expected = expected_writable(&input, &path);
        assert_eq!(fs.can_write(&t, &path), expected, "sandbox write to {path}");
        // Creating a directory follows the same rule.
        if !fs.exists(&path) {
            assert_eq!(
                fs.allowed(&t, &path, &Op::CreateDir),
                expected,
                "sandbox mkdir {path}"
            );
        }
        // The plan never takes anything away from the caller outside the sandbox.
        if path.starts_with(&p(r"C:\Users\me")) {
            assert!(fs.can_write(&caller, &path), "caller write to {path}");
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} probes");
}

#[test]
fn nested_git_dir_and_file_forms_and_gitdir_targets_are_read_only() {
    let input = fixture::input();
    let (plan, fs) = planned_fs(&input);
    let t = sandbox_token(&plan);
    for rel in [
        r".git\HEAD",
        r".git\objects\pack",
        r".git\modules\sub\config",
        r"sub\.git",
        r"linked\.git",
    ] {
        assert!(!fs.can_write(&t, &ws(rel)), "{rel}");
    }
    assert!(!fs.allowed(&t, &ws(r".git\objects"), &Op::CreateFile));
    assert!(!fs.can_write(&t, &p(r"C:\Users\me\gitdirs\wt\HEAD")));
    assert!(fs.can_write(&t, &ws(r"sub\lib.rs")));
    // Reading stays possible.
    assert!(fs.check(&t, &ws(r".git\HEAD"), mask::FILE_GENERIC_READ));
    assert!(fs.check(
        &t,
        &p(r"C:\Users\me\Documents\secret.txt"),
        mask::FILE_GENERIC_READ
    ));
}

#[test]
fn overlapping_roots_collapse_and_workspaces_do_not_share_grants() {
    let mut input = fixture::input();
    input.writable_roots = vec![ws(""), ws("src"), p(&fixture::WS.to_uppercase())];
    assert_eq!(input.effective_roots(), vec![ws("")]);
    let (plan, _) = planned_fs(&input);
    assert_eq!(plan.roots.len(), 1);
    assert_eq!(
        plan.acl
            .iter()
            .filter(|a| a.reason == "writable root")
            .count(),
        1
    );

    // Workspace B was granted in an earlier run; its allow ACE is still on disk.
    let other = WinPlanInput::for_workspace(fixture::OTHER_WS).expect("other");
    let mut caps = CapabilityStore::default();
    caps.ensure(&[p(fixture::OTHER_WS)], rng_from(50))
        .expect("caps");
    caps.ensure(&input.effective_roots(), rng_from(90))
        .expect("caps");
    let plan_b = super::plan(&other, &caps, UnelevatedOptions::default(), &me()).expect("plan b");
    let plan_a = super::plan(&input, &caps, UnelevatedOptions::default(), &me()).expect("plan a");
    assert_ne!(plan_a.roots[0].1, plan_b.roots[0].1);
    let mut fs = fixture::filesystem();
    fixture::apply(&mut fs, &plan_b.acl);
    fixture::apply(&mut fs, &plan_a.acl);
    let ta = sandbox_token(&plan_a);
    let tb = sandbox_token(&plan_b);
    assert!(!fs.can_write(&ta, &p(r"C:\Users\me\other\notes.txt")));
    assert!(fs.can_write(&tb, &p(r"C:\Users\me\other\notes.txt")));
    assert!(!fs.can_write(&tb, &ws(r"src\main.rs")));
    assert!(fs.can_write(&ta, &ws(r"src\main.rs")));

    // Two separate roots in one run: both writable, each with its own SID.
    let mut two = fixture::input();
    two.writable_roots.push(p(fixture::OTHER_WS));
    let (plan2, fs2) = planned_fs(&two);
    assert_eq!(plan2.roots.len(), 2);
    assert_ne!(plan2.roots[0].1, plan2.roots[1].1);
    let t2 = sandbox_token(&plan2);
    assert!(fs2.can_write(&t2, &p(r"C:\Users\me\other\notes.txt")));
    assert!(fs2.can_write(&t2, &ws(r"src\main.rs")));
}

#[test]
fn missing_protected_paths_are_reported_not_claimed() {
    let input = fixture::input();
    let (plan, fs) = planned_fs(&input);
    assert_eq!(
        plan.check_after_run,
        vec![ws(".codex"), ws(".claude"), ws(".agents")]
    );
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.contains(".codex") && w.contains("cannot stop its creation")));
    // The honest consequence, shown by the model: the sandbox can create it.
    assert!(fs.allowed(&sandbox_token(&plan), &ws(".codex"), &Op::CreateDir));
}

#[test]
fn paths_with_spaces_and_unicode_keep_their_spelling() {
    let (plan, _) = planned_fs(&fixture::input());
    assert_eq!(
        plan.acl[0].path.as_string(),
        r"C:\Users\me\My Projects\Zoë repo"
    );
    let env: std::collections::BTreeMap<_, _> = plan.env.iter().cloned().collect();
    assert_eq!(
        env.get("TEMP").map(String::as_str),
        Some(r"C:\Users\me\My Projects\Zoë repo\tmp")
    );
}

#[test]
fn network_and_deny_read_are_reported_as_not_enforced() {
    let mut input = fixture::input();
    input.deny_read = vec![crate::input::PlannedWinPath {
        path: p(r"C:\Users\me\.ssh"),
        kind: Kind::Dir,
        reason: "deny_read ~/.ssh".into(),
    }];
    let (plan, _) = planned_fs(&input);
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.contains("network off is NOT enforced")));
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.contains(r"C:\Users\me\.ssh") && w.contains("NOT enforced")));
    assert!(plan
        .env
        .iter()
        .any(|(k, v)| k == "HTTPS_PROXY" && v == crate::env::DEAD_PROXY));
    input.network = Network::On;
    let (plan_on, _) = planned_fs(&input);
    assert!(!plan_on.warnings.iter().any(|w| w.contains("network")));
    assert!(!plan_on.env.iter().any(|(k, _)| k == "HTTPS_PROXY"));
}

#[test]
fn missing_capability_is_an_error() {
    let input = fixture::input();
    let e = plan(
        &input,
        &CapabilityStore::default(),
        UnelevatedOptions::default(),
        &me(),
    );
    assert!(matches!(e, Err(UnelevatedPlanError::MissingCapability(_))));
}

#[test]
fn null_device_and_everyone_writable_objects_follow_the_everyone_option() {
    let input = fixture::input();
    let caps = caps_for(&input);
    let nul_acl = [Ace::allow(
        Sid::everyone(),
        mask::GENERIC_READ | mask::GENERIC_WRITE,
        Inherit::NONE,
    )];
    for everyone in [true, false] {
        let plan = plan(
            &input,
            &caps,
            UnelevatedOptions {
                restrict_with_everyone: everyone,
                ..UnelevatedOptions::default()
            },
            &me(),
        )
        .expect("plan");
        let mut fs = fixture::filesystem();
        fixture::apply(&mut fs, &plan.acl);
        let t = sandbox_token(&plan);
        assert_eq!(
            access_check(&t, &nul_acl, &Sid::local_system(), mask::FILE_GENERIC_WRITE),
            everyone,
            "NUL, everyone={everyone}"
        );
        // The price of Everyone: an object whose DACL grants Everyone write is writable.
        assert_eq!(fs.can_write(&t, &p(r"C:\Everyone Writable\x")), everyone);
    }
}

/// What the write-restricted token leaves to the normal pass (DELETE, WRITE_DAC): outside the
/// guarded paths the caller's own rights decide; the guards stop it on protected paths.
#[test]
fn delete_rename_and_dacl_changes_are_decided_by_the_normal_pass() {
    let (plan, fs) = planned_fs(&fixture::input());
    let t = sandbox_token(&plan);
    assert!(fs.allowed(&t, &p(r"C:\Users\me\Documents\secret.txt"), &Op::Delete));
    assert!(fs.check(&t, &p(r"C:\Users\me\Documents\secret.txt"), mask::WRITE_DAC));
    assert!(!fs.allowed(&t, &ws(".git"), &Op::RenameTo(ws(".git-moved"))));
    // The default lock denies re-ACLing a protected path (and its parent) to the command; the
    // caller keeps it through Authenticated Users. With the lock off it is your own full control.
    assert!(!fs.check(&t, &ws(r".git\HEAD"), mask::WRITE_DAC));
    assert!(!fs.check(&t, &ws(""), mask::WRITE_DAC));
    assert!(fs.check(&caller_token(), &ws(r".git\HEAD"), mask::WRITE_DAC));
    let off = UnelevatedOptions {
        lock_protected_dacls: false,
        ..UnelevatedOptions::default()
    };
    let plan_off =
        super::plan(&fixture::input(), &caps_for(&fixture::input()), off, &me()).expect("plan");
    let mut fs_off = fixture::filesystem();
    fixture::apply(&mut fs_off, &plan_off.acl);
    assert!(plan_off.token.deny_only.is_empty());
    assert!(fs_off.check(
        &sandbox_token(&plan_off),
        &ws(r".git\HEAD"),
        mask::WRITE_DAC
    ));
    assert!(!fs.allowed(&t, &ws(r"sub\.git"), &Op::Delete));
    // Moving things *out of* the writable roots or *into* protected dirs stays denied, because
    // creating the destination is a write.
    assert!(!fs.allowed(
        &t,
        &ws(r"src\main.rs"),
        &Op::RenameTo(p(r"C:\Users\me\Documents\main.rs"))
    ));
    assert!(!fs.allowed(
        &t,
        &ws(r"src\main.rs"),
        &Op::RenameTo(ws(r".git\hooks-main.rs"))
    ));
    assert!(plan.warnings[0].contains("guardrail, not a boundary"));
}

#[test]
fn guards_are_one_entry_per_path_and_idempotent() {
    let (plan, _) = planned_fs(&fixture::input());
    let guards: Vec<_> = plan
        .acl
        .iter()
        .filter(|a| a.reason.starts_with(GUARD_REASON))
        .collect();
    let mut paths: Vec<_> = guards.iter().map(|g| g.path.clone()).collect();
    paths.dedup();
    assert_eq!(paths.len(), guards.len());
    // The workspace root (parent of .git) gets FILE_DELETE_CHILD denied to the caller, and its
    // DACL locked for this object only: the escape allow first, then the denies.
    let root = guards
        .iter()
        .find(|g| g.path == ws(""))
        .expect("root guard");
    assert_eq!(
        root.aces,
        vec![
            Ace::allow(super::lock_escape_group(), super::LOCK_MASK, Inherit::NONE),
            Ace::deny(
                me(),
                mask::FILE_DELETE_CHILD | super::LOCK_MASK,
                Inherit::NONE
            ),
            Ace::allow(Sid::owner_rights(), mask::READ_CONTROL, Inherit::NONE),
        ]
    );
    assert_eq!(plan.token.deny_only, vec![super::lock_escape_group()]);
    // .git: OWNER RIGHTS read-control, no re-ACL beneath, no delete of .git itself.
    let git = guards
        .iter()
        .find(|g| g.path == ws(".git"))
        .expect("git guard");
    assert!(git.aces.contains(&Ace::allow(
        Sid::owner_rights(),
        mask::READ_CONTROL,
        Inherit::TREE
    )));
    let unlocked = super::metadata_guards(&fixture::input().protected, &[], &me(), false);
    let git_unlocked = unlocked
        .iter()
        .find(|g| g.path == ws(".git"))
        .expect("git guard");
    assert!(!git_unlocked
        .aces
        .iter()
        .any(|a| a.mask & mask::WRITE_DAC != 0));
    let locked = super::metadata_guards(&fixture::input().protected, &[], &me(), true);
    let git_locked = locked
        .iter()
        .find(|g| g.path == ws(".git"))
        .expect("git guard");
    assert!(git_locked.aces.contains(&Ace::deny(
        me(),
        mask::WRITE_DAC | mask::WRITE_OWNER,
        Inherit::TREE
    )));
    assert!(git
        .aces
        .contains(&Ace::deny(me(), mask::DELETE, Inherit::NONE)));
    // Applying twice changes nothing.
    for g in guards {
        let once = crate::ace::merge_explicit(&[], &g.aces).expect("first apply");
        assert_eq!(
            crate::ace::merge_explicit(&once, &g.aces),
            None,
            "{}",
            g.path
        );
        assert!(crate::ace::remove_aces(&once, &g.aces).is_empty());
    }
}

#[test]
fn cleanup_restores_every_dacl_exactly() {
    let input = fixture::input();
    let (plan, mut fs) = planned_fs(&input);
    let before = fixture::filesystem();
    assert!(fs
        .paths()
        .iter()
        .any(|x| fs.stored_dacl(x) != before.stored_dacl(x)));
    // What `stockade clean` does: undo each entry (children first does not matter: each
    // removal re-propagates).
    for entry in plan.acl.iter().rev() {
        let cur = fs.explicit_of(&entry.path).expect("planned path exists");
        if let Some(new) = crate::ace::unmerge_explicit(&cur, &entry.aces) {
            assert!(fs.replace_explicit(&entry.path, new));
        }
    }
    for x in before.paths() {
        assert_eq!(fs.stored_dacl(&x), before.stored_dacl(&x), "{x}");
    }
    // Nothing left to undo the second time.
    for entry in &plan.acl {
        let cur = fs.explicit_of(&entry.path).expect("path");
        assert_eq!(crate::ace::unmerge_explicit(&cur, &entry.aces), None);
    }
    let mut caps = caps_for(&input);
    assert!(caps.forget(&input.effective_roots()));
    assert!(caps.sid_for(&ws("")).is_none());
}
