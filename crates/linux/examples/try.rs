use stockade_policy::backend::{Backend, Command, RunOptions};
use stockade_policy::model::{LimitsPolicy, NetworkMode};
use stockade_policy::plan::{PathKind, Plan, PlannedPath, TempPlan};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
    let ws = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let plan = Plan {
        workspace: ws.clone(),
        cwd: ws.clone(),
        writable_roots: vec![ws.clone()],
        protected: vec![PlannedPath {
            path: ws.join(".git"),
            kind: PathKind::Dir,
            reason: "git".into(),
        }],
        protected_missing: vec![],
        deny_read: vec![PlannedPath {
            path: "/root/.ssh".into(),
            kind: PathKind::Dir,
            reason: "x".into(),
        }],
        allow_unix_sockets: vec![],
        network: NetworkMode::Off,
        env: std::env::vars_os().collect(),
        env_removed: vec![],
        limits: LimitsPolicy::default(),
        temp: TempPlan {
            private: true,
            persist_dir: Some("/root/.local/state/stockade/tmp/test".into()),
        },
    };
    let cmd = Command {
        program: args[0].clone(),
        args: args[1..].to_vec(),
    };
    let t = std::time::Instant::now();
    let r = stockade_linux::UnelevatedBackend.run(&plan, &cmd, &RunOptions::default());
    eprintln!("{:?} {:?}", t.elapsed(), r);
}
