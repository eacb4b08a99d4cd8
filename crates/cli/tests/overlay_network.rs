//! Copy-on-write outside the workspace with the allowlist network (issue 14): `npm install`, a
//! cargo build that fetches a new dependency and `pip install` reach their registries through
//! stockade's proxy (the registries' domains allowed), the packages land in the overlay's upper
//! layer, and the real home (every cache in it) hashes identical before and after.
//!
//! Needs the public registries (crates.io, npm, PyPI) reachable: when they are not, the test
//! skips (a failure under `STOCKADE_REQUIRE_ROOT_TESTS=1`).

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// FNV-1a over every entry's relative path, mode, size, mtime and content (sorted walk).
fn tree_hash(root: &Path) -> String {
    fn feed(h: &mut u64, b: &[u8]) {
        for c in b {
            *h ^= u64::from(*c);
            *h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    use std::os::unix::fs::MetadataExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut n = 0usize;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = match fs::read_dir(&d) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => continue,
        };
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            n += 1;
            feed(
                &mut h,
                p.strip_prefix(root).unwrap().as_os_str().as_encoded_bytes(),
            );
            feed(
                &mut h,
                format!("{:o}:{}:{}", m.mode(), m.size(), m.mtime()).as_bytes(),
            );
            if m.is_file() {
                feed(&mut h, &fs::read(&p).unwrap());
            } else if m.is_dir() {
                stack.push(p);
            }
        }
    }
    format!("{h:016x}/{n}")
}

fn reachable(url: &str) -> bool {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "10", "-f", url])
        .status()
        .is_ok_and(|s| s.success())
}

fn upper_home(w: &World) -> PathBuf {
    let ws = fs::canonicalize(&w.ws).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf %s \"$1\" | sha256sum")
        .arg("sh")
        .arg(&ws)
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)[..16].to_string();
    w.state.join("stockade/ws").join(hex).join("upper/home")
}

#[test]
fn registry_installs_through_the_allowlist_stay_in_the_overlay() {
    for tool in ["curl", "npm", "node", "cargo", "python3"] {
        if !have(tool) {
            return skip(format!("{tool} not installed"));
        }
    }
    for url in [
        "https://registry.npmjs.org/is-number",
        "https://index.crates.io/config.json",
        "https://pypi.org/simple/iniconfig/",
    ] {
        if !reachable(url) {
            return skip(format!("{url} is not reachable from this machine"));
        }
    }
    let w = World::new("cow-net");
    // a home with (empty) caches of its own; the tools fill them inside
    for d in [".npm", ".cargo", ".cache/pip"] {
        fs::create_dir_all(w.home.join(d)).unwrap();
    }
    fs::write(w.home.join(".profile"), "# home\n").unwrap();
    let before = tree_hash(&w.home);
    let allow = |r: Run, domains: &[&str]| {
        let mut r = r
            .flag("--no-pty")
            .flag("--network")
            .flag("allowlist")
            .limit(Duration::from_secs(300));
        for d in domains {
            r = r.flag("--allow-domain").flag(d);
        }
        r
    };
    // npm install from the registry
    let npm = w.ws.join("npm");
    fs::create_dir_all(&npm).unwrap();
    fs::write(
        npm.join("package.json"),
        r#"{"name":"app","version":"1.0.0"}"#,
    )
    .unwrap();
    let o = allow(w.run().cwd(&npm), &["registry.npmjs.org"]).sh(
        "npm install --no-audit --no-fund is-number@7.0.0 >/dev/null 2>&1; \
         node -e 'console.log(\"MARK-npm-\" + require(\"is-number\")(5))'",
    );
    assert!(o.has("MARK-npm-true"), "{o:#?}");
    // a cargo build that fetches a dependency the (empty) registry cache does not have
    let krate = w.ws.join("cargo");
    fs::create_dir_all(krate.join("src")).unwrap();
    fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[dependencies]\nitoa = \"=1.0.11\"\n",
    )
    .unwrap();
    fs::write(
        krate.join("src/main.rs"),
        "fn main() { println!(\"MARK-cargo-{}\", itoa::Buffer::new().format(42)); }\n",
    )
    .unwrap();
    let rustup = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| real_home().join(".rustup"));
    let o = allow(
        w.run()
            .cwd(&krate)
            .env("CARGO_HOME", w.home.join(".cargo"))
            .env("RUSTUP_HOME", &rustup)
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    real_home().join(".cargo/bin").display()
                ),
            ),
        &["index.crates.io", "static.crates.io"],
    )
    .sh("cargo run -q");
    assert!(o.has("MARK-cargo-42"), "{o:#?}");
    // pip install from PyPI (no local wheel directory)
    let py = w.ws.join("py");
    fs::create_dir_all(&py).unwrap();
    let o = allow(w.run().cwd(&py), &["pypi.org", "files.pythonhosted.org"]).sh(
        "unset PIP_FIND_LINKS PIP_NO_INDEX; /usr/bin/python3 -m venv .venv && \
         .venv/bin/pip install -q --index-url https://pypi.org/simple six==1.16.0 && \
         .venv/bin/python -c 'import six; print(\"MARK-pip\", six.__version__)' && \
         PYTHONNOUSERSITE= PIP_BREAK_SYSTEM_PACKAGES=1 /usr/bin/python3 -m pip install -q --user \
         --index-url https://pypi.org/simple iniconfig==2.0.0 && cd / && \
         /usr/bin/python3 -c 'import iniconfig; print(\"MARK-user\", iniconfig.__file__)'",
    );
    assert!(o.has("MARK-pip 1.16.0"), "{o:#?}");
    assert!(o.has("MARK-user /"), "{o:#?}");
    assert!(
        o.stdout.contains(&format!(
            "MARK-user {}",
            w.home.join(".local/lib").display()
        )) || o.stdout.contains(&format!(
            "MARK-user {}",
            fs::canonicalize(&w.home)
                .unwrap()
                .join(".local/lib")
                .display()
        )),
        "six not from the user site: {o:#?}"
    );
    assert_eq!(
        tree_hash(&w.home),
        before,
        "the real home (its caches) changed"
    );
    // what the tools cached went to the upper layer
    let upper = upper_home(&w);
    let cached = |rel: &str| upper.join(rel).exists();
    assert!(
        cached(".npm/_cacache") && cached(".cargo/registry/cache") && cached(".local/lib"),
        "{:?}",
        fs::read_dir(&upper).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    // control: the same kind of write unsandboxed changes the hash
    fs::write(w.home.join(".npm/control"), "x").unwrap();
    assert_ne!(tree_hash(&w.home), before);
}
