//! Copy-on-write outside the workspace (issue 14), judged from the host: writes to the home
//! directory and `/tmp` succeed inside and the host never changes; package tools work from
//! caches whose host trees hash identical before and after; `stockade diff` lists the changes;
//! `stockade apply` copies only what it is asked, refuses protected, masked and stale entries
//! and symlinks, and wants `--force` for files that make programs run.
//!
//! `unprivileged_user_flow` creates a throwaway user: run this suite under the shared lock,
//! `flock /tmp/stockade-root.lock cargo test -p stockade --test overlay`.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// FNV-1a over every entry's relative path, type, mode, size and content (sorted walk).
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

fn world(tag: &str) -> World {
    World::new(tag)
}

fn upper_home(w: &World) -> PathBuf {
    let ws = fs::canonicalize(&w.ws).unwrap();
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(ws.as_os_str().as_encoded_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)[..16].to_string();
    w.state.join("stockade/ws").join(hex).join("upper/home")
}

#[test]
fn home_writes_stay_private_persist_and_are_listed() {
    let w = world("cow-home");
    fs::write(w.home.join("f"), "orig\n").unwrap();
    fs::create_dir_all(w.home.join("olddir/sub")).unwrap();
    fs::write(w.home.join("olddir/sub/x"), "x").unwrap();
    let before = tree_hash(&w.home);
    // npm install -g style writes, a modified file, a renamed and a deleted pre-existing dir
    let o = w.run().sh(
        "set -e; echo new > ~/f; mkdir -p ~/.npm-global/lib/node_modules/tool/bin; \
         echo 'console.log(1)' > ~/.npm-global/lib/node_modules/tool/index.js; \
         mv ~/olddir ~/renamed; rm -rf ~/renamed/sub; cat ~/f; echo MARK-ran",
    );
    o.assert_ran("MARK-ran");
    assert!(o.stdout.contains("new"), "{o:#?}");
    assert_eq!(tree_hash(&w.home), before, "the host home changed");
    assert_eq!(fs::read_to_string(w.home.join("f")).unwrap(), "orig\n");
    // persists across runs of the same workspace
    let o = w.run().sh("cat ~/f; test -d ~/olddir || echo MARK-gone");
    assert!(o.stdout.contains("new") && o.has("MARK-gone"), "{o:#?}");
    let d = w.stockade(&["diff", "--json"]);
    assert_eq!(d.code(), 0, "{d:#?}");
    let v: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    let has = |p: &Path, change: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == p.to_string_lossy().as_ref() && e["change"] == change)
    };
    let home = fs::canonicalize(&w.home).unwrap();
    assert!(has(&home.join("f"), "modified"), "{v:#}");
    assert!(
        has(
            &home.join(".npm-global/lib/node_modules/tool/index.js"),
            "added"
        ),
        "{v:#}"
    );
    assert!(has(&home.join("olddir"), "deleted"), "{v:#}");
    let one = w.stockade(&["diff", &home.join("f").display().to_string()]);
    assert!(
        one.stdout.contains("-orig") && one.stdout.contains("+new"),
        "{one:#?}"
    );
    // positive control: the same write unsandboxed does change the host
    fs::write(w.home.join("f"), "new\n").unwrap();
    assert_ne!(tree_hash(&w.home), before);
}

#[test]
fn apply_copies_only_the_named_path_and_refuses_what_it_must() {
    let w = world("cow-apply");
    let home = fs::canonicalize(&w.home).unwrap();
    fs::write(home.join("stale"), "host-1").unwrap();
    fs::create_dir_all(home.join("proj/.git/hooks")).unwrap();
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::write(home.join(".ssh/id"), "secret").unwrap();
    let o = w.run().sh(
        "set -e; echo a > ~/a.txt; echo b > ~/b.txt; echo 'alias ls=rm' > ~/.bashrc; \
         echo hook > ~/proj/.git/hooks/pre-commit; echo s > ~/stale; \
         echo k >> ~/.ssh/authorized_keys 2>/dev/null || echo MARK-ssh-ro; echo MARK-ran",
    );
    o.assert_ran("MARK-ran");
    assert!(
        o.has("MARK-ssh-ro"),
        "the masked ~/.ssh was writable: {o:#?}"
    );
    // an attacker-written upper: entries the sandbox could not make through the mounts
    let upper = upper_home(&w);
    fs::create_dir_all(upper.join(".ssh")).unwrap();
    fs::write(
        upper.join(".ssh/authorized_keys"),
        "ssh-ed25519 AAAA attacker",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", upper.join("link")).unwrap();
    let path = |r: &str| home.join(r).display().to_string();

    let a = w.stockade(&["apply", &path("a.txt")]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert_eq!(fs::read_to_string(home.join("a.txt")).unwrap(), "a\n");
    assert!(!home.join("b.txt").exists(), "apply copied more than asked");
    for (p, why) in [
        (".ssh/authorized_keys", "protected"),
        ("proj/.git/hooks/pre-commit", "protected name"),
        (".bashrc", "--force"),
        ("link", "symlink"),
    ] {
        let r = w.stockade(&["apply", &path(p)]);
        assert_eq!(r.code(), 125, "{p}: {r:#?}");
        assert!(r.stderr.contains(why), "{p}: {r:#?}");
        assert!(!home.join(p).exists() || p == "link", "{p} was applied");
    }
    assert!(fs::symlink_metadata(home.join("link")).is_err());
    assert_eq!(fs::read_to_string(home.join(".ssh/id")).unwrap(), "secret");
    assert!(!home.join(".ssh/authorized_keys").exists());
    // stale: the host changed after the run copied it up
    fs::write(home.join("stale"), "host-2").unwrap();
    let r = w.stockade(&["apply", &path("stale")]);
    assert_eq!(r.code(), 125, "{r:#?}");
    assert!(r.stderr.contains("changed since"), "{r:#?}");
    assert_eq!(fs::read_to_string(home.join("stale")).unwrap(), "host-2");
    // --force applies a reviewed rc file
    let r = w.stockade(&["apply", "--force", &path(".bashrc")]);
    assert_eq!(r.code(), 0, "{r:#?}");
    assert_eq!(
        fs::read_to_string(home.join(".bashrc")).unwrap(),
        "alias ls=rm\n"
    );
    // discard drops one change; the rest stays listed
    let r = w.stockade(&["discard", &path("b.txt")]);
    assert_eq!(r.code(), 0, "{r:#?}");
    let d = w.stockade(&["diff"]);
    assert!(
        !d.stdout.contains("b.txt") && d.stdout.contains("stale"),
        "{d:#?}"
    );
    let s = w.stockade(&["status", "--json"]);
    assert_eq!(s.code(), 0, "{s:#?}");
    let c = w.stockade(&["clean", "--all"]);
    assert_eq!(c.code(), 0, "{c:#?}");
    assert!(!upper.exists());
}

#[test]
fn host_tmp_is_visible_and_writes_stay_private() {
    let w = world("cow-tmp");
    let name = unique("stockade-cow");
    let script = PathBuf::from("/tmp").join(format!("{name}.sh"));
    let x = PathBuf::from("/tmp").join(format!("{name}.x"));
    fs::write(&script, "echo MARK-script-ran\n").unwrap();
    fs::write(&x, "host\n").unwrap();
    let o = w.run().sh(&format!(
        "bash {s}; echo inside >> {x}; cat {x}; echo MARK-ran",
        s = script.display(),
        x = x.display()
    ));
    let _ = fs::remove_file(&script);
    let host = fs::read_to_string(&x).unwrap();
    let _ = fs::remove_file(&x);
    o.assert_ran("MARK-ran");
    assert!(o.has("MARK-script-ran"), "{o:#?}");
    assert!(o.stdout.contains("host\ninside"), "{o:#?}");
    assert_eq!(host, "host\n", "the host's /tmp file changed");
}

#[test]
fn deny_mode_keeps_home_read_only() {
    let w = world("cow-deny");
    let cfg = w.root.join("deny.toml");
    fs::write(
        &cfg,
        "[filesystem]\noutside_writes = \"deny\"\n[temp]\nmode = \"empty\"\n",
    )
    .unwrap();
    fs::write(w.home.join("f"), "orig").unwrap();
    let o = w
        .run()
        .flag("--config")
        .flag(&cfg)
        .sh("echo x > ~/f || echo MARK-refused; ls /tmp | wc -l");
    assert!(o.has("MARK-refused"), "{o:#?}");
    assert_eq!(fs::read_to_string(w.home.join("f")).unwrap(), "orig");
}

#[test]
fn npm_ci_offline_from_a_filled_cache() {
    if !have("npm") {
        return skip("npm not installed");
    }
    let w = world("cow-npm");
    // a local package, packed; installing it fills ~/.npm (unsandboxed, no network)
    let pkg = w.root.join("pkg");
    fs::create_dir_all(&pkg).unwrap();
    fs::write(
        pkg.join("package.json"),
        r#"{"name":"tiny","version":"1.0.0","main":"i.js"}"#,
    )
    .unwrap();
    fs::write(pkg.join("i.js"), "module.exports = 42;\n").unwrap();
    let npm = |dir: &Path, args: &[&str]| {
        let o = Command::new("npm")
            .args(args)
            .current_dir(dir)
            .env("HOME", &w.home)
            .env("npm_config_cache", w.home.join(".npm"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "npm {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    npm(
        &pkg,
        &["pack", "--pack-destination", &w.root.display().to_string()],
    );
    fs::write(
        w.ws.join("package.json"),
        format!(
            r#"{{"name":"app","version":"1.0.0","dependencies":{{"tiny":"file:{}"}}}}"#,
            w.root.join("tiny-1.0.0.tgz").display()
        ),
    )
    .unwrap();
    npm(&w.ws, &["install", "--offline", "--no-audit", "--no-fund"]);
    fs::remove_dir_all(w.ws.join("node_modules")).unwrap();
    let before = tree_hash(&w.home);
    let o = w.run().sh(
        "npm ci --offline --no-audit --no-fund && node -e 'console.log(\"MARK-\" + require(\"tiny\"))'",
    );
    assert!(o.has("MARK-42"), "{o:#?}");
    assert_eq!(tree_hash(&w.home), before, "the real npm cache changed");
}

#[test]
fn cargo_build_from_the_registry_cache() {
    let cargo_home = real_home().join(".cargo");
    let reg = cargo_home.join("registry");
    if !have("cargo") || !reg.is_dir() {
        return skip("cargo or its registry cache missing");
    }
    let w = world("cow-cargo");
    // the caller's registry cache, copied into this world's home (the host tree judged here)
    let ch = w.home.join(".cargo");
    fs::create_dir_all(&ch).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&reg)
        .arg(&ch)
        .status()
        .unwrap();
    assert!(st.success());
    let have_cfg_if = fs::read_dir(ch.join("registry/cache"))
        .unwrap()
        .flatten()
        .any(|d| {
            fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with("cfg-if-1."))
        });
    if !have_cfg_if {
        return skip("cfg-if 1.x not in the registry cache");
    }
    fs::write(
        w.ws.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[dependencies]\ncfg-if = \"1\"\n",
    )
    .unwrap();
    fs::create_dir_all(w.ws.join("src")).unwrap();
    fs::write(
        w.ws.join("src/main.rs"),
        "fn main() { cfg_if::cfg_if! { if #[cfg(unix)] { println!(\"MARK-built\"); } } }\n",
    )
    .unwrap();
    let before = tree_hash(&ch);
    let rustup = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| real_home().join(".rustup"));
    let o = w
        .run()
        .env("CARGO_HOME", &ch)
        .env("RUSTUP_HOME", &rustup)
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                cargo_home.join("bin").display()
            ),
        )
        .limit(Duration::from_secs(300))
        .sh("cargo run --offline -q");
    assert!(o.has("MARK-built"), "{o:#?}");
    assert_eq!(tree_hash(&ch), before, "the real cargo home changed");
    // the sandbox did write to CARGO_HOME (its lock, the unpacked sources): into the upper
    assert!(upper_home(&w).join(".cargo").exists());
}

/// A minimal wheel (a zip with the package and its dist-info), made with python's zipfile.
fn make_wheel(dir: &Path) {
    let code = format!(
        "import zipfile\nz=zipfile.ZipFile('{}/tinypy-1.0-py3-none-any.whl','w')\n\
         z.writestr('tinypy/__init__.py','V=7\\n')\n\
         z.writestr('tinypy-1.0.dist-info/METADATA','Metadata-Version: 2.1\\nName: tinypy\\nVersion: 1.0\\n')\n\
         z.writestr('tinypy-1.0.dist-info/WHEEL','Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
         z.writestr('tinypy-1.0.dist-info/RECORD','')\nz.close()\n",
        dir.display()
    );
    let st = Command::new("python3")
        .args(["-c", &code])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn pip_install_no_index_into_a_venv_and_user_site() {
    if !have("python3") {
        return skip("python3 not installed");
    }
    let w = world("cow-pip");
    let wheels = w.root.join("wheels");
    fs::create_dir_all(&wheels).unwrap();
    make_wheel(&wheels);
    fs::create_dir_all(w.home.join(".cache/pip")).unwrap();
    // the real interpreter (not a version-manager shim, which would rehash its own dir)
    let py = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let py = String::from_utf8_lossy(&py.stdout).trim().to_string();
    let before = tree_hash(&w.home);
    let o = w.run().limit(Duration::from_secs(240)).sh(&format!(
        "set -e; {py} -m venv .venv; .venv/bin/pip install -q --no-index --find-links {d} tinypy; \
         .venv/bin/python -c 'import tinypy; print(\"MARK-venv\", tinypy.V)'; \
         PYTHONNOUSERSITE= {py} -m pip install -q --user --no-index --find-links {d} tinypy; \
         cd / && {py} -c 'import tinypy; print(\"MARK-user\", tinypy.V)'",
        d = wheels.display()
    ));
    assert!(o.has("MARK-venv 7") && o.has("MARK-user 7"), "{o:#?}");
    assert_eq!(
        tree_hash(&w.home),
        before,
        "the host home (pip cache, user site) changed"
    );
    assert!(
        fs::read_dir(upper_home(&w).join(".local")).is_ok(),
        "user site not in the upper"
    );
}

#[test]
fn go_build_with_a_module_cache() {
    if !have("go") {
        return skip("go is not installed on this machine");
    }
    let w = world("cow-go");
    // A module in a file:// proxy, downloaded into ~/go/pkg/mod unsandboxed (no network).
    let setup = r#"set -e
P=$ROOT/goproxy/example.com/tiny/@v; mkdir -p $P; cd $P
echo v1.0.0 > list; printf 'module example.com/tiny\n\ngo 1.19\n' > v1.0.0.mod
echo '{"Version":"v1.0.0","Time":"2020-01-01T00:00:00Z"}' > v1.0.0.info
python3 -c "import zipfile; z=zipfile.ZipFile('v1.0.0.zip','w'); z.writestr('example.com/tiny@v1.0.0/go.mod', open('v1.0.0.mod').read()); z.writestr('example.com/tiny@v1.0.0/tiny.go', 'package tiny\nconst V = 7\n'); z.close()"
cd $WS; printf 'module app\n\ngo 1.19\n' > go.mod
cat > main.go <<'GO'
package main

import "example.com/tiny"

func main() { println("MARK-go", tiny.V) }
GO
GOPROXY=file://$ROOT/goproxy GOSUMDB=off GOFLAGS=-mod=mod go get example.com/tiny@v1.0.0 2>&1"#;
    let st = Command::new("sh")
        .arg("-c")
        .arg(setup)
        .env("HOME", &w.home)
        .env("ROOT", &w.root)
        .env("WS", &w.ws)
        .env_remove("GOPATH")
        .env_remove("GOMODCACHE")
        .env_remove("GOCACHE")
        .status()
        .unwrap();
    assert!(st.success());
    assert!(w.home.join("go/pkg/mod/example.com/tiny@v1.0.0").is_dir());
    let before = tree_hash(&w.home);
    let o = w
        .run()
        .limit(Duration::from_secs(240))
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .sh("go build -o app . && ./app");
    assert!(o.stderr.contains("MARK-go 7"), "{o:#?}");
    assert_eq!(tree_hash(&w.home), before, "the real module cache changed");
    // the build cache went to the upper
    assert!(upper_home(&w).join(".cache/go-build").is_dir());
}

/// The same flows as an ordinary user: home and /tmp writes stay private, diff and apply work.
#[test]
fn unprivileged_user_flow() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !have("useradd") || !have("setpriv") {
        return skip("needs root (to create a throwaway user), useradd and setpriv");
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "stkcow{}x{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let home = PathBuf::from("/home").join(&name);
    let st = Command::new("useradd")
        .args(["-m", "-d"])
        .arg(&home)
        .args(["-s", "/bin/sh", "-U", &name])
        .status()
        .unwrap();
    assert!(st.success());
    struct Gone(String, PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("pkill")
                .args(["-KILL", "-u", &self.0])
                .status();
            let _ = Command::new("userdel")
                .args(["-r", &self.0])
                .stderr(Stdio::null())
                .status();
            let _ = fs::remove_dir_all(&self.1);
        }
    }
    let _gone = Gone(name.clone(), home.clone());
    let as_user = |argv: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            &name,
            "--regid",
            &name,
            "--init-groups",
            "--",
            "env",
            "-i",
        ])
        .arg(format!("HOME={}", home.display()))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .args(argv)
        .current_dir(&home);
        run_guarded(c, None, Duration::from_secs(60))
    };
    let ws = home.join("ws");
    let o = as_user(&["mkdir", "-p", &ws.display().to_string()]);
    assert_eq!(o.code(), 0, "{o:#?}");
    let o = as_user(&[
        "sh",
        "-c",
        "echo orig > ~/f; echo host > /tmp/stkcow-$(id -u)",
    ]);
    assert_eq!(o.code(), 0, "{o:#?}");
    let tmpx = format!("/tmp/stkcow-{}", {
        let o = Command::new("id").args(["-u", &name]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    });
    let wss = ws.display().to_string();
    let o = as_user(&[
        bin(), "run", "--workspace", &wss, "--", "sh", "-c",
        &format!("echo new > ~/f && mkdir -p ~/.cache/tool && echo c > ~/.cache/tool/c && echo in >> {tmpx} && cat ~/f {tmpx} && echo MARK-ran"),
    ]);
    let host_tmp = fs::read_to_string(&tmpx).unwrap_or_default();
    let _ = fs::remove_file(&tmpx);
    assert!(
        o.stdout.contains("MARK-ran") && o.stdout.contains("new\nhost\nin"),
        "{o:#?}"
    );
    assert_eq!(fs::read_to_string(home.join("f")).unwrap(), "orig\n");
    assert_eq!(host_tmp, "host\n");
    assert!(!home.join(".cache/tool").exists());
    // a second run (overlayfs' scratch from the first is reset) reads its own writes back
    let o = as_user(&[
        bin(),
        "run",
        "--workspace",
        &wss,
        "--",
        "sh",
        "-c",
        "cat ~/.cache/tool/c && echo MARK-again",
    ]);
    assert!(o.stdout.contains("c\nMARK-again"), "{o:#?}");
    let d = as_user(&[bin(), "diff", "--workspace", &wss]);
    assert!(
        d.stdout.contains(".cache/tool/c") && d.stdout.contains("modified"),
        "{d:#?}"
    );
    let f = home.join("f").display().to_string();
    let a = as_user(&[bin(), "apply", "--workspace", &wss, &f]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert_eq!(fs::read_to_string(home.join("f")).unwrap(), "new\n");
    assert!(
        !home.join(".cache/tool").exists(),
        "apply copied more than asked"
    );
    let c = as_user(&[bin(), "clean", "--workspace", &wss]);
    assert_eq!(c.code(), 0, "{c:#?}");
}

/// A host socket seen through an overlay (an agent or tmux socket in `/tmp`, one in the home) is
/// not connectable: the gate refuses the home's, and the kernel finds no listener for the
/// overlay's inode in `/tmp` (`ECONNREFUSED`); a server the command starts in `/tmp` still works.
#[test]
fn host_sockets_behind_the_overlays_stay_unreachable() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let w = world("cow-sock");
    let tmp_sock = PathBuf::from("/tmp").join(format!("{}.sock", unique("stockade-cow")));
    let home_sock = w.home.join("agent.sock");
    let l1 = UnixListener::bind(&tmp_sock).unwrap();
    let l2 = UnixListener::bind(&home_sock).unwrap();
    // positive control: unsandboxed, both answer
    assert!(UnixStream::connect(&tmp_sock).is_ok() && UnixStream::connect(&home_sock).is_ok());
    let _ = (l1.accept(), l2.accept());
    l1.set_nonblocking(true).unwrap();
    l2.set_nonblocking(true).unwrap();
    let o = w.run().py(&format!(
        "import socket\nfor p in ({:?}, {:?}):\n    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect(p); print('CONNECTED', p)\n    except OSError as e:\n        print('MARK-refused', e.errno)\n",
        tmp_sock.display().to_string(),
        home_sock.display().to_string()
    ));
    let _ = fs::remove_file(&tmp_sock);
    assert_eq!(o.stdout.matches("MARK-refused").count(), 2, "{o:#?}");
    assert!(!o.stdout.contains("CONNECTED"), "{o:#?}");
    assert!(
        l1.accept().is_err() && l2.accept().is_err(),
        "a host listener was reached"
    );
    let o = w.run().py(
        "import socket, os\np = '/tmp/inside-%d.sock' % os.getpid()\nl = socket.socket(socket.AF_UNIX); l.bind(p); l.listen(1)\nc = socket.socket(socket.AF_UNIX); c.connect(p); print('MARK-inside-ok')\n",
    );
    o.assert_ran("MARK-inside-ok");
}

/// An overlaid tree that is empty on the host has its upper bound in directly (no overlay mount):
/// writes stay private all the same, persist, and are listed; once the host tree has a file, the
/// next run is an overlay again and sees both.
#[test]
fn an_empty_tree_is_bound_copy_on_write_and_becomes_an_overlay_when_filled() {
    let w = world("cow-empty");
    let tree = w.root.join("emptytree");
    fs::create_dir_all(&tree).unwrap();
    // the user's configuration, so that `stockade diff` knows the root too
    let cfg = w.home.join(".config/stockade/config.toml");
    fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    fs::write(
        &cfg,
        format!(
            "[filesystem]\noverlay_roots = [{:?}]\n",
            tree.display().to_string()
        ),
    )
    .unwrap();
    let t = fs::canonicalize(&tree).unwrap().display().to_string();
    let o = w.run().sh(&format!(
        "set -e; echo inside > {t}/a; mkdir {t}/d; cat {t}/a; grep ' {t} ' /proc/self/mountinfo; echo MARK-ran"
    ));
    o.assert_ran("MARK-ran");
    assert!(o.stdout.contains("inside"), "{o:#?}");
    assert!(
        !o.stdout.contains(" - overlay "),
        "an empty tree was overlaid: {o:#?}"
    );
    assert_eq!(
        fs::read_dir(&tree).unwrap().count(),
        0,
        "the host tree changed"
    );
    // positive control: the same write unsandboxed lands (and fills the tree for the next run)
    fs::write(tree.join("h"), "host\n").unwrap();
    assert_eq!(fs::read_dir(&tree).unwrap().count(), 1);
    let o = w.run().sh(&format!(
        "cat {t}/a {t}/h; echo more > {t}/h; cat {t}/h; grep ' {t} ' /proc/self/mountinfo; echo MARK-again"
    ));
    assert!(
        o.stdout.contains("inside\nhost\nmore") && o.has("MARK-again"),
        "{o:#?}"
    );
    assert!(o.stdout.contains(" - overlay "), "{o:#?}");
    assert_eq!(fs::read_to_string(tree.join("h")).unwrap(), "host\n");
    assert!(!tree.join("a").exists());
    let d = w.stockade(&["diff", "--json"]);
    assert_eq!(d.code(), 0, "{d:#?}");
    assert!(
        d.stdout.contains(&format!("{t}/a")) && d.stdout.contains(&format!("{t}/h")),
        "{d:#?}"
    );
}

/// `stockade diff | head -1`: the reader leaves after one line; stockade stops quietly with 0
/// instead of panicking on the broken pipe.
#[test]
fn diff_into_a_closed_pipe_exits_quietly() {
    let w = world("cow-epipe");
    let o = w.run().sh("mkdir -p ~/many && echo MARK-ran");
    o.assert_ran("MARK-ran");
    // enough entries that the output overflows the pipe buffer (written straight into the upper)
    let many = upper_home(&w).join("many");
    for i in 0..4000 {
        fs::write(many.join(format!("file-with-a-longish-name-{i:05}")), "x").unwrap();
    }
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!(
            "{} diff --workspace {} | head -1; echo \"MARK-status ${{PIPESTATUS[0]}}\"",
            bin(),
            w.ws.display()
        ))
        .env("HOME", &w.home)
        .env("XDG_STATE_HOME", &w.state);
    let o = run_guarded(c, None, Duration::from_secs(60));
    assert!(o.stdout.contains("added"), "{o:#?}");
    assert!(o.has("MARK-status 0"), "{o:#?}");
    assert!(!o.stderr.contains("panicked"), "{o:#?}");
    // control: the full listing is longer than what head let through
    let d = w.stockade(&["diff"]);
    assert!(d.stdout.lines().count() > 4000, "{}", d.stdout.len());
}

/// `filesystem.overlay_max_bytes` exceeded during a run: the writes stay in the upper (the host
/// never sees them), the run's result says the state is now over the cap, and the next run
/// refuses to start, naming `stockade clean`; after it, runs start again.
#[test]
fn a_run_that_exceeds_the_cap_is_told_and_the_next_one_refused() {
    let w = world("cow-cap");
    let cfg = w.root.join("cap.toml");
    fs::write(&cfg, "[filesystem]\noverlay_max_bytes = 1048576\n").unwrap();
    let run = || w.run().flag("--config").flag(&cfg).flag("--json");
    // control: a small run (it also records a fresh size, so the next one is not measured
    // because of the once-a-minute rule)
    let o = run().sh("echo small > ~/small; echo MARK-small");
    o.assert_ran("MARK-small");
    assert!(!o.stderr.contains("overlay_max_bytes"), "{o:#?}");
    let o = run().sh("head -c 3000000 /dev/zero > ~/big && echo MARK-big");
    o.assert_ran("MARK-big");
    assert_eq!(o.code(), 0, "{o:#?}");
    assert!(
        o.stderr
            .contains("over filesystem.overlay_max_bytes = 1048576")
            && o.stderr.contains("next run will refuse"),
        "{o:#?}"
    );
    let json = o
        .stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("json outcome");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains("overlay_max_bytes")),
        "{v:#}"
    );
    assert!(!w.home.join("big").exists(), "the write reached the host");
    let o = run().sh("echo MARK-should-not-run");
    assert_eq!(o.code(), 125, "{o:#?}");
    assert!(!o.has("MARK-should-not-run"), "{o:#?}");
    assert!(o.stderr.contains("stockade clean"), "{o:#?}");
    let c = w.stockade(&["clean"]);
    assert_eq!(c.code(), 0, "{c:#?}");
    let o = run().sh("echo MARK-after-clean");
    o.assert_ran("MARK-after-clean");
}

/// The package-tool flows run by an ordinary user (not root): `npm ci --offline` from a filled
/// `~/.npm`, `cargo build --offline` from the registry cache, `pip install --no-index` into a
/// venv and `--user`, `go build` from the module cache. All succeed, and the user's home (every
/// real cache in it) hashes identical before and after. The user cannot reach root's toolchain
/// in `/root`; the runs happen in a private mount namespace where it is bound at `/mnt/tc`
/// (nothing changes on the host).
#[test]
fn unprivileged_user_package_tools() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !have("useradd") || !have("setpriv") || !have("unshare") {
        return skip("needs root (to create a throwaway user), useradd, setpriv and unshare");
    }
    for tool in ["npm", "node", "go", "cargo", "python3"] {
        if !have(tool) {
            return skip(format!("{tool} not installed"));
        }
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    let tc = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let reg = real_home().join(".cargo/registry");
    let index = fs::read_dir(reg.join("index"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name());
    let crate_file = index.as_ref().and_then(|i| {
        fs::read_dir(reg.join("cache").join(i))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("cfg-if-1."))
            })
    });
    let (Some(index), Some(crate_file)) = (index, crate_file) else {
        return skip("cfg-if 1.x not in the registry cache");
    };
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "stkpt{}x{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let home = PathBuf::from("/home").join(&name);
    let wsroot = PathBuf::from("/home").join(format!("{name}.ws"));
    let st = Command::new("useradd")
        .args(["-m", "-d"])
        .arg(&home)
        .args(["-s", "/bin/sh", "-U", &name])
        .status()
        .unwrap();
    assert!(st.success());
    struct Gone(String, Vec<PathBuf>);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("pkill")
                .args(["-KILL", "-u", &self.0])
                .status();
            let _ = Command::new("userdel")
                .args(["-r", &self.0])
                .stderr(Stdio::null())
                .status();
            for p in &self.1 {
                let _ = Command::new("chmod").args(["-R", "u+rwX"]).arg(p).status();
                let _ = fs::remove_dir_all(p);
            }
        }
    }
    let _gone = Gone(name.clone(), vec![home.clone(), wsroot.clone()]);
    // the registry cache: cfg-if's index entry and crate, as the user's own
    let ureg = home.join(".cargo/registry");
    let idx_src = reg.join("index").join(&index);
    let idx_dst = ureg.join("index").join(&index);
    fs::create_dir_all(idx_dst.join(".cache/cf/g-")).unwrap();
    fs::copy(idx_src.join("config.json"), idx_dst.join("config.json")).unwrap();
    fs::copy(
        idx_src.join(".cache/cf/g-/cfg-if"),
        idx_dst.join(".cache/cf/g-/cfg-if"),
    )
    .unwrap();
    fs::create_dir_all(ureg.join("cache").join(&index)).unwrap();
    fs::copy(
        &crate_file,
        ureg.join("cache")
            .join(&index)
            .join(crate_file.file_name().unwrap()),
    )
    .unwrap();
    fs::create_dir_all(&wsroot).unwrap();
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{name}:{name}"))
        .arg(&home)
        .arg(&wsroot)
        .status()
        .unwrap();
    assert!(st.success());
    let as_user = |script: &str, limit: u64| {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs tc /mnt && mkdir /mnt/tc && mount --bind \"$TC\" /mnt/tc && \
                 exec setpriv --reuid \"$U\" --regid \"$U\" --init-groups -- env -i HOME=\"$H\" \
                 PATH=/mnt/tc/bin:/usr/local/bin:/usr/bin:/bin XDG_STATE_HOME=\"$W/state\" W=\"$W\" \
                 S=\"$S\" sh -c \"$SCRIPT\"",
            )
            .env("TC", &tc)
            .env("U", &name)
            .env("H", &home)
            .env("W", &wsroot)
            .env("S", bin())
            .env("SCRIPT", script)
            .current_dir("/");
        run_guarded(c, None, Duration::from_secs(limit))
    };
    // Fill the caches unsandboxed, as the user (no network: local packages only).
    let setup = r#"set -e
mkdir -p $W/pkg $W/npm $W/cargo/src $W/py $W/go $W/goproxy/example.com/tiny/@v $W/wheels
cd $W/pkg && printf '{"name":"tiny","version":"1.0.0","main":"i.js"}' > package.json && echo 'module.exports = 42;' > i.js
npm pack -q --pack-destination $W >/dev/null
cd $W/npm && printf '{"name":"app","version":"1.0.0","dependencies":{"tiny":"file:%s/tiny-1.0.0.tgz"}}' $W > package.json
npm install -q --offline --no-audit --no-fund >/dev/null && rm -rf node_modules
cd $W/cargo && printf '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n[dependencies]\ncfg-if = "1"\n' > Cargo.toml
echo 'fn main() { cfg_if::cfg_if! { if #[cfg(unix)] { println!("MARK-cargo"); } } }' > src/main.rs
cd $W/goproxy/example.com/tiny/@v && echo v1.0.0 > list && printf 'module example.com/tiny\n\ngo 1.19\n' > v1.0.0.mod
echo '{"Version":"v1.0.0","Time":"2020-01-01T00:00:00Z"}' > v1.0.0.info
python3 -c "import zipfile; z=zipfile.ZipFile('v1.0.0.zip','w'); z.writestr('example.com/tiny@v1.0.0/go.mod', open('v1.0.0.mod').read()); z.writestr('example.com/tiny@v1.0.0/tiny.go', 'package tiny\nconst V = 7\n'); z.close()"
cd $W/go && printf 'module app\n\ngo 1.19\n' > go.mod
cat > main.go <<'GO'
package main

import "example.com/tiny"

func main() { println("MARK-go", tiny.V) }
GO
GOPROXY=file://$W/goproxy GOSUMDB=off GOFLAGS=-mod=mod go get example.com/tiny@v1.0.0 2>&1
cd $W/wheels && python3 -c "
import zipfile
z=zipfile.ZipFile('tinypy-1.0-py3-none-any.whl','w')
z.writestr('tinypy/__init__.py','V=7\n')
z.writestr('tinypy-1.0.dist-info/METADATA','Metadata-Version: 2.1\nName: tinypy\nVersion: 1.0\n')
z.writestr('tinypy-1.0.dist-info/WHEEL','Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n')
z.writestr('tinypy-1.0.dist-info/RECORD','')
z.close()"
mkdir -p ~/.cache/pip
echo MARK-setup"#;
    let o = as_user(setup, 240);
    assert!(o.has("MARK-setup"), "{o:#?}");
    assert!(home.join("go/pkg/mod/example.com/tiny@v1.0.0").is_dir());
    assert!(home.join(".npm").is_dir());
    let before = tree_hash(&home);
    // The flows, sandboxed (network off by default), each in its own workspace.
    let runs = r#"
cd $W/npm && $S run --workspace . -- sh -c 'npm ci --offline --no-audit --no-fund >/dev/null && node -e "console.log(\"MARK-npm-\" + require(\"tiny\"))"'
cd $W/cargo && $S run --workspace . -- sh -c 'cargo run --offline -q'
cd $W/py && $S run --workspace . -- sh -c "python3 -m venv .venv && .venv/bin/pip install -q --no-index --find-links $W/wheels tinypy && .venv/bin/python -c 'import tinypy; print(\"MARK-venv\", tinypy.V)' && PYTHONNOUSERSITE= PIP_BREAK_SYSTEM_PACKAGES=1 /usr/bin/python3 -m pip install -q --user --no-index --find-links $W/wheels tinypy && cd / && /usr/bin/python3 -c 'import tinypy; print(\"MARK-user\", tinypy.V)'"
cd $W/go && $S run --workspace . -- sh -c 'GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod go build -o app . && ./app 2>&1'
echo MARK-done"#;
    let o = as_user(runs, 600);
    for m in [
        "MARK-npm-42",
        "MARK-cargo",
        "MARK-venv 7",
        "MARK-user 7",
        "MARK-go 7",
        "MARK-done",
    ] {
        assert!(o.has(m), "{m}: {o:#?}");
    }
    assert_eq!(
        tree_hash(&home),
        before,
        "the user's home (npm, cargo, pip, go caches) changed"
    );
    // the writes went to the workspaces' upper layers (the user site of `pip install --user`)
    let uppers: Vec<PathBuf> = fs::read_dir(wsroot.join("state/stockade/ws"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("upper/home"))
        .collect();
    assert!(
        uppers.iter().any(|u| u.join(".local/lib").is_dir()),
        "{uppers:?}"
    );
    // control: the same kind of write unsandboxed does change the hash
    fs::write(home.join(".npm/_logs-control"), "x").unwrap();
    assert_ne!(tree_hash(&home), before);
}

/// Two runs of one workspace at the same time: the second one's launch must not take away the
/// first one's overlayfs work dir (each run locks a work-dir slot of its own), so the first run's
/// copy-ups still work after the second started. (Before the slots, the second run removed the
/// first's scratch dir and the first run's write of a host file failed with EPERM.)
#[test]
fn concurrent_runs_of_one_workspace_keep_their_copy_ups() {
    let w = world("cow-conc");
    fs::write(w.home.join("a"), "host-a\n").unwrap();
    fs::write(w.home.join("b"), "host-b\n").unwrap();
    let before = tree_hash(&w.home);
    let first = w.run().command(&[
        "sh",
        "-c",
        "touch started; while [ ! -e go ]; do sleep 0.05; done; echo inside >> ~/a && echo MARK-first-ok",
    ]);
    let mut first = {
        let mut c = first;
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let t0 = std::time::Instant::now();
    while !w.ws.join("started").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // the second run launches (and ends) while the first is still running
    let o = w.run().sh("echo inside >> ~/b && echo MARK-second-ok");
    o.assert_ran("MARK-second-ok");
    fs::write(w.ws.join("go"), "").unwrap();
    let out = wait_child(&mut first, None, Duration::from_secs(60), t0);
    assert!(out.has("MARK-first-ok"), "{out:#?}");
    let o = w.run().sh("cat ~/a ~/b");
    assert!(
        o.stdout.contains("host-a\ninside\nhost-b\ninside"),
        "{o:#?}"
    );
    assert_eq!(tree_hash(&w.home), before, "the host home changed");
}

/// Another workspace's upper layer (its private changes) is unreadable inside, with the overlays
/// (the state is masked beneath the overlaid home) and with `outside_writes = "deny"` too (the
/// home is read-only there, not unreadable).
#[test]
fn other_workspaces_changes_are_unreadable_in_both_modes() {
    let w = world("cow-other");
    // another workspace of the same user (same home and state dir) changes the home
    let other = w.root.join("other-ws");
    fs::create_dir_all(&other).unwrap();
    let o = w.stockade(&[
        "run",
        "--workspace",
        &other.display().to_string(),
        "--",
        "sh",
        "-c",
        "echo secret-change > ~/mine; echo MARK-ran",
    ]);
    o.assert_ran("MARK-ran");
    let leaked = fs::read_dir(w.state.join("stockade/ws"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("upper/home/mine"))
        .find(|p| p.exists())
        .expect("the other workspace's upper");
    // positive control: the change is there on the host, in that workspace's state
    assert_eq!(fs::read_to_string(&leaked).unwrap(), "secret-change\n");
    let deny = w.root.join("deny.toml");
    fs::write(
        &deny,
        "[filesystem]\noutside_writes = \"deny\"\n[temp]\nmode = \"empty\"\n",
    )
    .unwrap();
    for cfg in [None, Some(&deny)] {
        let mut r = w.run();
        if let Some(c) = cfg {
            r = r.flag("--config").flag(c);
        }
        let o = r.sh(&format!(
            "echo MARK-tried; cat {} 2>/dev/null || echo MARK-unreadable",
            leaked.display()
        ));
        o.assert_ran("MARK-tried");
        assert!(
            o.has("MARK-unreadable") && !o.stdout.contains("secret-change"),
            "{cfg:?}: {o:#?}"
        );
    }
}

/// Something mounted beneath the home on the host (a FUSE or tmpfs mount) is locked in the
/// sandbox's user namespace, and overlayfs refuses a lower tree with locked mounts. The run
/// must fail closed, change nothing, and name that mount and the way out — not blame missing
/// kernel support. The mount is made in a private mount namespace of this test only
/// (`unshare -m`), so no concurrent test sees it. Control: the same run without the mount
/// works, and with `outside_writes = "deny"` it works with the mount.
#[test]
fn a_mount_beneath_the_home_is_named_in_the_refusal() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !have("unshare") {
        return skip("needs root (a tmpfs mount in a private mount namespace) and unshare");
    }
    let w = world("cow-submount");
    fs::create_dir(w.home.join("sub mnt")).unwrap();
    let deny = w.root.join("deny.toml");
    fs::write(&deny, "[filesystem]\noutside_writes = \"deny\"\n").unwrap();
    let inner = |mount: bool, extra: &[&Path]| {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"]);
        let script = if mount {
            "mount -t tmpfs -o size=1m tmpfs \"$HOME/sub mnt\" && exec \"$@\""
        } else {
            "exec \"$@\""
        };
        c.arg(script).arg("sh").arg(bin()).args(["run", "--no-pty"]);
        for e in extra {
            c.arg("--config").arg(e);
        }
        c.arg("--workspace").arg(&w.ws);
        c.args(["--", "sh", "-c", "echo MARK-ran > ~/written; echo MARK-ran"]);
        c.env("HOME", &w.home)
            .env("XDG_STATE_HOME", &w.state)
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(&w.ws);
        common::run_guarded(c, None, std::time::Duration::from_secs(60))
    };
    let control = inner(false, &[]);
    assert!(control.stdout.contains("MARK-ran"), "control: {control:#?}");
    let o = inner(true, &[]);
    assert_eq!(o.code, Some(125), "{o:#?}");
    assert!(!o.stdout.contains("MARK-ran"), "{o:#?}");
    assert!(
        o.stderr.contains("while something is mounted beneath it")
            && o.stderr.contains("sub mnt")
            && o.stderr.contains("outside_writes = \"deny\""),
        "{o:#?}"
    );
    assert!(!w.home.join("written").exists());
    let d = inner(true, &[&deny]);
    assert!(
        d.stdout.contains("MARK-ran"),
        "deny mode with the mount: {d:#?}"
    );
}
