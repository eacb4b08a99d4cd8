use super::*;
use crate::access::{Op, TokenModel};
use crate::fixture::{self, p, sid, ws};
use crate::input::PlannedWinPath;

fn group() -> Sid {
    sid("S-1-5-21-100-200-300-1010")
}
fn offline() -> Sid {
    sid("S-1-5-21-100-200-300-1011")
}
fn online() -> Sid {
    sid("S-1-5-21-100-200-300-1012")
}

fn names() -> Accounts {
    Accounts::for_caller(&fixture::me())
}
fn off() -> String {
    names().offline
}
fn on() -> String {
    names().online
}

fn accounts() -> BTreeMap<String, Sid> {
    [(off(), offline()), (on(), online())].into_iter().collect()
}

fn installed(ports: &[u16]) -> (InstallRecord, Observed) {
    let rules: Vec<String> = wanted_rules(&names(), &accounts(), ports)
        .into_iter()
        .map(|r| r.name)
        .collect();
    let filters: Vec<String> = wanted_wfp(&names(), &accounts(), ports)
        .into_iter()
        .map(|f| f.name)
        .collect();
    let names: BTreeSet<String> = [off(), on()].into_iter().collect();
    let observed = Observed {
        group_sid: Some(group()),
        accounts: accounts(),
        group_members: names.clone(),
        hidden: names.clone(),
        firewall_rules: rules.iter().cloned().collect(),
        stored_passwords: names,
        other_group_members: BTreeSet::new(),
        wfp_sublayer: true,
        wfp_filters: filters.iter().cloned().collect(),
    };
    let record = InstallRecord {
        version: INSTALL_VERSION,
        caller: fixture::me(),
        group_sid: group(),
        accounts: accounts(),
        firewall_rules: rules,
        allowed_loopback_ports: ports.to_vec(),
        acl_paths: vec![ws("")],
        wfp_filters: filters,
    };
    (record, observed)
}

/// The offline account's token: a separate user, member of the sandbox group, not restricted.
fn sandbox_account_token() -> TokenModel {
    TokenModel {
        user: offline(),
        groups: vec![
            group(),
            Sid::everyone(),
            Sid::users(),
            Sid::authenticated_users(),
            Sid::logon(0, 4242),
        ],
        deny_only: vec![],
        restricting: vec![],
        write_restricted: false,
    }
}

#[test]
fn fresh_setup_creates_everything_in_order() {
    let steps = setup_steps(&names(), None, &Observed::default(), &[]);
    assert_eq!(steps[0], SetupStep::CreateGroup(GROUP.into()));
    assert!(steps.contains(&SetupStep::CreateAccount(off())));
    assert!(steps.contains(&SetupStep::HideAccount(on())));
    // No SIDs yet, so no rules yet: the apply layer re-plans after creating accounts.
    assert!(!steps
        .iter()
        .any(|s| matches!(s, SetupStep::AddFirewallRule(_))));
    assert_eq!(steps.last(), Some(&SetupStep::WriteRecord));

    let mut obs = Observed {
        group_sid: Some(group()),
        accounts: accounts(),
        ..Default::default()
    };
    obs.group_members = [off(), on()].iter().map(|s| s.to_string()).collect();
    obs.hidden = obs.group_members.clone();
    obs.stored_passwords = obs.group_members.clone();
    let second = setup_steps(&names(), None, &obs, &[]);
    let added: Vec<_> = second
        .iter()
        .filter(|s| matches!(s, SetupStep::AddFirewallRule(_)))
        .collect();
    assert_eq!(added.len(), 3);
    assert!(second.contains(&SetupStep::AddWfpSublayer));
    let filters: Vec<_> = second
        .iter()
        .filter(|s| matches!(s, SetupStep::AddWfpFilter(n) if n.ends_with(&format!("[{}]", off()))))
        .collect();
    assert_eq!(
        filters.len(),
        4,
        "block connect/recv-accept v4/v6, no permit without ports"
    );
}

#[test]
fn wfp_filters_are_installed_verified_by_drift_and_removed() {
    let (record, mut observed) = installed(&[3128]);
    assert_eq!(record.wfp_filters.len(), 6);
    let gone = record.wfp_filters[0].clone();
    observed.wfp_filters.remove(&gone);
    assert!(drift(&record, &observed).contains(&Drift::MissingWfpFilter(gone.clone())));
    let steps = setup_steps(&names(), Some(&record), &observed, &[3128]);
    assert_eq!(
        steps,
        vec![SetupStep::AddWfpFilter(gone), SetupStep::WriteRecord]
    );
    // Other ports: every filter is replaced.
    let (record, observed) = installed(&[3128]);
    let steps = setup_steps(&names(), Some(&record), &observed, &[8080]);
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, SetupStep::RemoveWfpFilter(_)))
            .count(),
        6
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, SetupStep::AddWfpFilter(_)))
            .count(),
        6
    );
    // Uninstall removes them and, as the last caller, the sublayer.
    let u = uninstall_steps(&names(), Some(&record), &observed);
    assert_eq!(
        u.iter()
            .filter(|s| matches!(s, UninstallStep::RemoveWfpFilter(_)))
            .count(),
        6
    );
    assert!(u.contains(&UninstallStep::RemoveWfpSublayer));
    let mut shared = observed.clone();
    shared
        .other_group_members
        .insert("StkOff-000000000000".into());
    assert!(!uninstall_steps(&names(), Some(&record), &shared)
        .contains(&UninstallStep::RemoveWfpSublayer));
}

#[test]
fn setup_is_idempotent() {
    let (record, observed) = installed(&[3128]);
    assert!(drift(&record, &observed).is_empty());
    assert!(setup_steps(&names(), Some(&record), &observed, &[3128]).is_empty());
}

#[test]
fn drift_is_detected_and_repaired() {
    let (record, mut observed) = installed(&[]);
    observed
        .accounts
        .insert(off(), sid("S-1-5-21-100-200-300-2000"));
    let first_rule = record.firewall_rules[0].clone();
    observed.firewall_rules.remove(&first_rule);
    observed
        .firewall_rules
        .insert("Stockade offline: stray".into());
    observed.hidden.remove(&on());
    let d = drift(&record, &observed);
    assert!(d.contains(&Drift::Account(off())));
    assert!(d.contains(&Drift::MissingRule(first_rule.clone())));
    assert!(d.contains(&Drift::UnexpectedRule("Stockade offline: stray".into())));
    assert!(d.contains(&Drift::Visible(on())));
    let steps = setup_steps(&names(), Some(&record), &observed, &[]);
    // The offline SID changed, so every rule is rebuilt for the new SID.
    assert!(steps.contains(&SetupStep::RemoveFirewallRule(
        "Stockade offline: stray".into()
    )));
    assert!(steps.contains(&SetupStep::AddFirewallRule(first_rule)));
    assert!(steps.contains(&SetupStep::HideAccount(on())));
    assert_eq!(steps.last(), Some(&SetupStep::WriteRecord));

    let old = InstallRecord {
        version: INSTALL_VERSION - 1,
        ..record.clone()
    };
    let (_, clean) = installed(&[]);
    assert!(drift(&old, &clean).contains(&Drift::Version {
        recorded: INSTALL_VERSION - 1,
        current: INSTALL_VERSION
    }));
    assert!(!setup_steps(&names(), Some(&old), &clean, &[]).is_empty());
    // Changing the allowed ports replaces the rules.
    assert!(setup_steps(&names(), Some(&record), &clean, &[8080])
        .iter()
        .any(|s| matches!(s, SetupStep::AddFirewallRule(_))));
}

#[test]
fn uninstall_removes_acls_rules_accounts_group_and_record() {
    let (record, observed) = installed(&[]);
    let steps = uninstall_steps(&names(), Some(&record), &observed);
    assert_eq!(steps[0], UninstallStep::RevokeAcl(ws("")));
    assert!(steps.contains(&UninstallStep::DeleteAccount(off())));
    assert!(steps.contains(&UninstallStep::DeleteGroup(GROUP.into())));
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, UninstallStep::RemoveFirewallRule(_)))
            .count(),
        3
    );
    assert_eq!(steps.last(), Some(&UninstallStep::DeleteRecord));
    assert_eq!(
        uninstall_steps(&names(), None, &Observed::default()),
        vec![UninstallStep::DeleteRecord]
    );
}

#[test]
fn offline_account_is_firewalled_and_online_is_not() {
    let rules = wanted_rules(&names(), &accounts(), &[]);
    assert!(rules
        .iter()
        .all(|r| r.local_user_sddl.contains(&offline().to_string())));
    assert!(!rules
        .iter()
        .any(|r| r.local_user_sddl.contains(&online().to_string())));
}

#[test]
fn sandbox_account_writes_exactly_roots_minus_protected_including_delete_and_rename() {
    let mut input = fixture::input();
    input.deny_read = vec![PlannedWinPath {
        path: p(r"C:\Users\me\Documents\secret.txt"),
        kind: Kind::File,
        reason: "deny_read".into(),
    }];
    // The profile DACL does not admit the sandbox account; the workspace is reached by path
    // (bypass-traverse), and setup's ACEs are what grant it.
    let acl = run_acl(&input, &group());
    let mut fs = fixture::filesystem();
    fixture::apply(&mut fs, &acl);
    let t = sandbox_account_token();
    for path in fixture::probes() {
        if path.starts_with(&p(r"C:\Everyone Writable")) {
            continue;
        }
        let expected = input.effective_roots().iter().any(|r| path.starts_with(r))
            && !input.protected.iter().any(|pp| path.starts_with(&pp.path));
        assert_eq!(fs.can_write(&t, &path), expected, "write {path}");
        if fs.exists(&path) {
            assert_eq!(
                fs.allowed(&t, &path, &Op::Delete),
                expected,
                "delete {path}"
            );
        }
    }
    assert!(!fs.allowed(&t, &ws(".git"), &Op::RenameTo(ws(".git-moved"))));
    assert!(!fs.allowed(&t, &ws(r"sub\.git"), &Op::Delete));
    assert!(!fs.check(&t, &ws(r".git\HEAD"), mask::WRITE_DAC));
    assert!(fs.check(&t, &ws(r".git\HEAD"), mask::FILE_GENERIC_READ));
    assert!(!fs.check(
        &t,
        &p(r"C:\Users\me\Documents\secret.txt"),
        mask::FILE_READ_DATA
    ));
    assert!(fs.allowed(
        &t,
        &ws(r"src\main.rs"),
        &Op::RenameTo(ws(r"src\renamed.rs"))
    ));
    assert!(acl.iter().all(|pa| pa
        .aces
        .iter()
        .all(|a| a.mask & mask::FILE_DELETE_CHILD == 0 || a.kind == crate::ace::AceKind::Deny)));
}

#[test]
fn runner_pipe_admits_only_the_sandbox_account_and_caller() {
    let s = runner_pipe_sddl(&offline(), &fixture::me());
    assert_eq!(
        s,
        format!("D:P(A;;GA;;;{})(A;;GRGW;;;{})", fixture::me(), offline())
    );
    assert!(!s.contains("WD") && !s.contains("BA") && !s.contains("SY"));
}

#[test]
fn passwords_have_all_classes_and_differ() {
    let a = password_from_random([0; 32]);
    let b = password_from_random([200; 32]);
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
    for pw in [a, b] {
        assert!(pw.chars().any(|c| c.is_ascii_uppercase()));
        assert!(pw.chars().any(|c| c.is_ascii_lowercase()));
        assert!(pw.chars().any(|c| c.is_ascii_digit()));
        assert!(pw.chars().any(|c| !c.is_ascii_alphanumeric()));
    }
}

#[test]
fn runner_frames_round_trip_and_reject_oversize() {
    let req = RunnerRequest {
        command_line: r#""C:\Program Files\Git\bin\git.exe" status"#.into(),
        cwd: r"C:\Users\me\My Projects\Zoë repo".into(),
        env: vec![("TEMP".into(), r"C:\ProgramData\Stockade\tmp\x".into())],
        timeout_ms: Some(1500),
        max_memory: None,
        max_processes: Some(64),
        token: run_token(&[(ws(""), sid("S-1-5-21-1-2-3-4"))]),
    };
    let bytes = encode_frame(&req);
    let back: RunnerRequest = read_frame(&mut bytes.as_slice()).expect("decode");
    assert_eq!(back, req);
    let mut big = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
    big.extend([0u8; 8]);
    assert!(read_frame::<RunnerReply>(&mut big.as_slice()).is_err());
    assert!(read_frame::<RunnerReply>(&mut &bytes[..3]).is_err());
}

#[test]
fn each_caller_gets_its_own_accounts_rules_and_uninstall() {
    let a = Accounts::for_caller(&fixture::me());
    let b = Accounts::for_caller(&sid("S-1-5-21-100-200-300-1002"));
    assert_ne!(a, b);
    for n in a.both().into_iter().chain(b.both()) {
        assert!(
            n.len() <= 20,
            "{n}: local account names are at most 20 characters"
        );
        assert!(
            n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{n}"
        );
    }
    assert_eq!(
        a,
        Accounts::for_caller(&sid("s-1-5-21-100-200-300-1001")),
        "stable, case-insensitive"
    );
    assert_eq!(a.for_network(true), a.offline);
    // Rule names carry the account: B's setup never touches A's rules.
    let b_accounts: BTreeMap<String, Sid> = [(b.offline.clone(), sid("S-1-5-21-100-200-300-3001"))]
        .into_iter()
        .collect();
    let ra: BTreeSet<String> = wanted_rules(&a, &accounts(), &[])
        .into_iter()
        .map(|r| r.name)
        .collect();
    let rb: BTreeSet<String> = wanted_rules(&b, &b_accounts, &[])
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(ra.len(), 3);
    assert!(ra.is_disjoint(&rb));
    // A's uninstall while B is installed: A's accounts go, the shared group stays.
    let (record, mut observed) = installed(&[]);
    observed.other_group_members.insert(b.offline.clone());
    let steps = uninstall_steps(&a, Some(&record), &observed);
    assert!(steps.contains(&UninstallStep::DeleteAccount(a.offline.clone())));
    assert!(!steps
        .iter()
        .any(|s| matches!(s, UninstallStep::DeleteGroup(_))));
    assert!(!steps.contains(&UninstallStep::DeleteAccount(b.offline.clone())));
}
