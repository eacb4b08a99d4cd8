//! Every gated syscall, legacy and `*at` forms, on an allowed name (`_ok`: must succeed) and on
//! a name beneath `forbidden/` (`_no`: must be refused with `EACCES` and change nothing), then
//! the same child again with a judge that allows everything (every `_no` succeeds: the gate is
//! what refused, and the operations were real).

use super::child::{c, r, ro};
use super::harness::{run, workspace, Opts, TestJudge};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

pub const TESTS: &[(&str, fn())] = &[
    (
        "every_gated_call_refused_beneath_forbidden_and_performed_elsewhere",
        every_call,
    ),
    (
        "positive_control_allow_all_judge_performs_every_refused_call",
        every_call_allowed,
    ),
];

fn prepare(ws: &Path) {
    let f = ws.join("forbidden");
    std::fs::create_dir_all(f.join("d")).unwrap();
    std::fs::create_dir_all(f.join("d2")).unwrap();
    for n in ["f", "g", "h", "i", "t"] {
        std::fs::write(f.join(n), "orig").unwrap();
        std::fs::set_permissions(f.join(n), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    for k in ["user.k1", "user.k2", "user.k3"] {
        let (p, n) = (c(&f.join("f")), super::child::cb(k.as_bytes()));
        // SAFETY: valid C strings and a 1-byte value.
        let ret = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
        assert_eq!(
            ret,
            0,
            "setxattr on the host: {}",
            std::io::Error::last_os_error()
        );
    }
    for n in ["a", "r1", "r3", "r5", "u1", "u2", "t1", "x1", "x2", "x3"] {
        std::fs::write(ws.join(n), "orig").unwrap();
    }
    for d in ["rd", "rd2", "adir"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
    }
}

fn listing(dir: &Path) -> Vec<(String, u64, u32, i64, usize)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let xattrs = xattr_count(&e.path());
            (
                e.file_name().to_string_lossy().into_owned(),
                m.ino(),
                m.mode(),
                m.mtime(),
                xattrs,
            )
        })
        .collect();
    v.sort();
    v
}

fn xattr_count(p: &Path) -> usize {
    let mut buf = [0u8; 1024];
    let cp = c(p);
    // SAFETY: `buf` is writable for its length; `cp` is a valid C string.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf[..n.max(0) as usize].iter().filter(|&&b| b == 0).count()
}

const LABELS_NO: &[&str] = &[
    "open_creat_no",
    "openat_creat_no",
    "creat_no",
    "open_wronly_no",
    "open_trunc_no",
    "open_append_no",
    "open_excl_wronly_no",
    "open_rdwr_excl_nofollow_no",
    "mkdir_no",
    "mkdirat_no",
    "mknod_no",
    "mknodat_no",
    "symlink_no",
    "symlinkat_no",
    "link_to_no",
    "link_from_no",
    "linkat_no",
    "truncate_no",
    "chmod_no",
    "fchmod_no",
    "fchmodat_no",
    "chown_no",
    "lchown_no",
    "fchown_no",
    "fchownat_no",
    "utime_no",
    "utimes_no",
    "futimesat_no",
    "utimensat_no",
    "futimens_no",
    "setxattr_no",
    "lsetxattr_no",
    "fsetxattr_no",
    "removexattr_no",
    "lremovexattr_no",
    "fremovexattr_no",
    "bind_no",
    "rename_into_no",
    "renameat_out_no",
    "renameat2_exchange_no",
    "unlink_no",
    "unlinkat_no",
    "unlinkat_dir_no",
    "rmdir_no",
];

const LABELS_OK: &[&str] = &[
    "open_creat_ok",
    "openat_creat_ok",
    "creat_ok",
    "open_write_ok",
    "open_rdonly_forbidden_ok",
    "mkdir_ok",
    "mkdirat_ok",
    "mknod_ok",
    "mknodat_ok",
    "symlink_ok",
    "symlinkat_ok",
    "link_ok",
    "linkat_ok",
    "truncate_ok",
    "chmod_ok",
    "fchmod_ok",
    "fchmodat_ok",
    "chown_ok",
    "lchown_ok",
    "fchown_ok",
    "fchownat_ok",
    "utime_ok",
    "utimes_ok",
    "futimesat_ok",
    "utimensat_ok",
    "futimens_ok",
    "setxattr_ok",
    "lsetxattr_ok",
    "fsetxattr_ok",
    "removexattr_ok",
    "lremovexattr_ok",
    "fremovexattr_ok",
    "bind_ok",
    "connect_ok",
    "rename_ok",
    "renameat_ok",
    "renameat2_noreplace_ok",
    "unlink_ok",
    "unlinkat_ok",
    "rmdir_ok",
    "unlinkat_dir_ok",
];

fn every_call() {
    let ws = workspace("calls");
    prepare(&ws);
    let before = listing(&ws.join("forbidden"));
    let judge = Arc::new(TestJudge::default());
    let run = run("calls", &ws, Arc::clone(&judge), Opts::new(&ws));
    assert!(run.success, "child failed:\n{}\n{}", run.stdout, run.stderr);
    for l in LABELS_OK {
        run.expect(l, 0);
    }
    for l in LABELS_NO {
        run.expect(l, libc::EACCES);
    }
    run.expect("open_excl_exists", libc::EEXIST);
    run.expect("open_trunc_again", libc::EACCES);
    // From outside: nothing beneath forbidden/ changed (names, inodes, modes, times, xattrs).
    assert_eq!(listing(&ws.join("forbidden")), before);
    assert_eq!(std::fs::read(ws.join("forbidden/f")).unwrap(), b"orig");
    // ... and the allowed operations happened.
    for n in [
        "n1", "n2", "n3", "dir1", "dir2", "fifo1", "fifo2", "l1", "l2", "ha", "hb", "s.sock", "r5",
        "r4", "r6",
    ] {
        assert!(std::fs::symlink_metadata(ws.join(n)).is_ok(), "{n} missing");
    }
    for n in ["u1", "u2", "rd", "rd2", "r1", "r3"] {
        assert!(
            std::fs::symlink_metadata(ws.join(n)).is_err(),
            "{n} still there"
        );
    }
    assert_eq!(std::fs::read(ws.join("a")).unwrap(), b"new");
    assert_eq!(std::fs::metadata(ws.join("t1")).unwrap().len(), 1);
    assert_eq!(
        std::fs::metadata(ws.join("x1")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::metadata(ws.join("x1")).unwrap().mtime(), 1_000_000);
    assert_eq!(xattr_count(&ws.join("x2")), 0, "set then removed");
    assert_eq!(run.denials.len(), LABELS_NO.len() + 1, "{:#?}", run.denials);
    // The judge saw real paths: the forbidden directory by its resolved name.
    let log = judge.log.lock().unwrap();
    let f = ws.join("forbidden");
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("{:?}", f.join("n2")))),
        "{log:#?}"
    );
    let _ = std::fs::remove_dir_all(&ws);
}

fn every_call_allowed() {
    let ws = workspace("calls-allowed");
    prepare(&ws);
    let judge = Arc::new(TestJudge {
        allow_all: true,
        ..Default::default()
    });
    let run = run("calls", &ws, judge, Opts::new(&ws));
    for l in LABELS_NO.iter().chain(LABELS_OK) {
        run.expect(l, 0);
    }
    assert!(ws.join("forbidden/n1").exists());
    assert!(!ws.join("forbidden/i").exists());
    assert_eq!(std::fs::read(ws.join("forbidden/f")).unwrap(), b"");
    let _ = std::fs::remove_dir_all(&ws);
}

/// The child's operations, in an order where each refused one is independent of the others
/// (so the allow-all control can perform all of them).
pub fn child(ws: &Path) {
    let f = ws.join("forbidden");
    let p = |n: &str| c(&ws.join(n));
    let q = |n: &str| c(&f.join(n));
    use libc::*;
    let o = |path: &std::ffi::CString, fl: i32| {
        // SAFETY: a valid C string; the returned descriptor is closed by `ro`.
        unsafe { syscall(SYS_open, path.as_ptr(), fl, 0o644) as i32 }
    };
    let dirfd = |path: &Path| {
        // SAFETY: a valid C string; read-only directory opens are not gated.
        unsafe { open(c(path).as_ptr(), O_RDONLY | O_DIRECTORY) }
    };
    let (wsd, fd_f) = (dirfd(ws), dirfd(&f));
    // SAFETY: libc calls with valid NUL-terminated C strings that outlive
    // each call and descriptors owned by this process; results are only reported.
    unsafe {
        ro("open_creat_ok", o(&p("n1"), O_CREAT | O_WRONLY));
        ro("open_creat_no", o(&q("n1"), O_CREAT | O_WRONLY));
        ro(
            "openat_creat_ok",
            openat(wsd, c"n2".as_ptr(), O_CREAT | O_RDWR, 0o644),
        );
        ro(
            "openat_creat_no",
            openat(fd_f, c"n2".as_ptr(), O_CREAT | O_RDWR, 0o644),
        );
        ro(
            "creat_ok",
            syscall(SYS_creat, p("n3").as_ptr(), 0o644) as i32,
        );
        ro(
            "creat_no",
            syscall(SYS_creat, q("n3").as_ptr(), 0o644) as i32,
        );
        ro("open_wronly_no", o(&q("f"), O_WRONLY));
        ro("open_trunc_no", o(&q("f"), O_RDONLY | O_TRUNC));
        ro("open_append_no", o(&q("f"), O_WRONLY | O_APPEND));
        ro("open_excl_wronly_no", o(&q("f"), O_WRONLY | O_EXCL));
        ro(
            "open_rdwr_excl_nofollow_no",
            o(&q("f"), O_RDWR | O_EXCL | O_NOFOLLOW),
        );
        ro("open_rdonly_forbidden_ok", o(&q("f"), O_RDONLY));
        ro("open_excl_exists", o(&p("a"), O_CREAT | O_EXCL | O_WRONLY));
        let fd = o(&p("a"), O_WRONLY | O_TRUNC);
        r(
            "open_write_ok",
            write(fd, b"new".as_ptr().cast(), 3) as i64 - 2,
        );
        close(fd);
        r("mkdir_ok", syscall(SYS_mkdir, p("dir1").as_ptr(), 0o755));
        r("mkdir_no", syscall(SYS_mkdir, q("dir1").as_ptr(), 0o755));
        r("mkdirat_ok", mkdirat(wsd, c"dir2".as_ptr(), 0o755).into());
        r("mkdirat_no", mkdirat(fd_f, c"dir2".as_ptr(), 0o755).into());
        r(
            "mknod_ok",
            syscall(SYS_mknod, p("fifo1").as_ptr(), S_IFIFO | 0o644, 0),
        );
        r(
            "mknod_no",
            syscall(SYS_mknod, q("fifo1").as_ptr(), S_IFIFO | 0o644, 0),
        );
        r(
            "mknodat_ok",
            mknodat(wsd, c"fifo2".as_ptr(), S_IFIFO | 0o644, 0).into(),
        );
        r(
            "mknodat_no",
            mknodat(fd_f, c"fifo2".as_ptr(), S_IFIFO | 0o644, 0).into(),
        );
        r(
            "symlink_ok",
            syscall(SYS_symlink, c"a".as_ptr(), p("l1").as_ptr()),
        );
        r(
            "symlink_no",
            syscall(SYS_symlink, c"a".as_ptr(), q("l1").as_ptr()),
        );
        r(
            "symlinkat_ok",
            symlinkat(c"a".as_ptr(), wsd, c"l2".as_ptr()).into(),
        );
        r(
            "symlinkat_no",
            symlinkat(c"a".as_ptr(), fd_f, c"l2".as_ptr()).into(),
        );
        r(
            "link_ok",
            syscall(SYS_link, p("a").as_ptr(), p("ha").as_ptr()),
        );
        r(
            "link_to_no",
            syscall(SYS_link, p("a").as_ptr(), q("ha").as_ptr()),
        );
        r(
            "link_from_no",
            syscall(SYS_link, q("f").as_ptr(), p("hf").as_ptr()),
        );
        let flw = AT_SYMLINK_FOLLOW;
        r(
            "linkat_ok",
            linkat(wsd, c"l1".as_ptr(), wsd, c"hb".as_ptr(), flw).into(),
        );
        r(
            "linkat_no",
            linkat(wsd, c"a".as_ptr(), fd_f, c"hb".as_ptr(), 0).into(),
        );
        r("truncate_ok", syscall(SYS_truncate, p("t1").as_ptr(), 1));
        r("truncate_no", syscall(SYS_truncate, q("t").as_ptr(), 1));
        r("chmod_ok", syscall(SYS_chmod, p("x1").as_ptr(), 0o640));
        r("chmod_no", syscall(SYS_chmod, q("f").as_ptr(), 0o600));
        let (rd_ok, rd_no) = (o(&p("x1"), O_RDONLY), o(&q("f"), O_RDONLY));
        r("fchmod_ok", fchmod(rd_ok, 0o600).into());
        r("fchmod_no", fchmod(rd_no, 0o755).into());
        r(
            "fchmodat_ok",
            fchmodat(wsd, c"x1".as_ptr(), 0o600, 0).into(),
        );
        r(
            "fchmodat_no",
            fchmodat(fd_f, c"f".as_ptr(), 0o600, 0).into(),
        );
        let (u, g) = (getuid(), getgid());
        r("chown_ok", syscall(SYS_chown, p("x1").as_ptr(), u, g));
        r("chown_no", syscall(SYS_chown, q("f").as_ptr(), u, g));
        r("lchown_ok", syscall(SYS_lchown, p("l1").as_ptr(), u, g));
        r("lchown_no", syscall(SYS_lchown, q("f").as_ptr(), u, g));
        r("fchown_ok", fchown(rd_ok, u, g).into());
        r("fchown_no", fchown(rd_no, u, g).into());
        r("fchownat_ok", fchownat(wsd, c"x1".as_ptr(), u, g, 0).into());
        r(
            "fchownat_no",
            fchownat(fd_f, c"f".as_ptr(), u, g, AT_SYMLINK_NOFOLLOW).into(),
        );
        let ub = utimbuf {
            actime: 1_000_000,
            modtime: 1_000_000,
        };
        r(
            "utimes_ok",
            syscall(SYS_utimes, p("x3").as_ptr(), std::ptr::null::<timeval>()),
        );
        r(
            "utimes_no",
            syscall(SYS_utimes, q("f").as_ptr(), std::ptr::null::<timeval>()),
        );
        let tv = [
            timeval {
                tv_sec: 5,
                tv_usec: 0,
            },
            timeval {
                tv_sec: 5,
                tv_usec: 0,
            },
        ];
        r(
            "futimesat_ok",
            syscall(SYS_futimesat, wsd, c"x3".as_ptr(), tv.as_ptr()),
        );
        r(
            "futimesat_no",
            syscall(SYS_futimesat, fd_f, c"f".as_ptr(), tv.as_ptr()),
        );
        let ts = [
            timespec {
                tv_sec: 7,
                tv_nsec: 0,
            },
            timespec {
                tv_sec: 7,
                tv_nsec: 0,
            },
        ];
        r(
            "utimensat_ok",
            utimensat(wsd, c"x3".as_ptr(), ts.as_ptr(), 0).into(),
        );
        r(
            "utimensat_no",
            utimensat(fd_f, c"f".as_ptr(), ts.as_ptr(), 0).into(),
        );
        r("futimens_ok", futimens(rd_ok, ts.as_ptr()).into());
        r("futimens_no", futimens(rd_no, ts.as_ptr()).into());
        r("utime_ok", syscall(SYS_utime, p("x1").as_ptr(), &ub));
        r("utime_no", syscall(SYS_utime, q("f").as_ptr(), &ub));
        let v = b"v".as_ptr().cast();
        r(
            "setxattr_ok",
            setxattr(p("x2").as_ptr(), c"user.a".as_ptr(), v, 1, 0).into(),
        );
        r(
            "setxattr_no",
            setxattr(q("f").as_ptr(), c"user.a".as_ptr(), v, 1, 0).into(),
        );
        r(
            "lsetxattr_ok",
            lsetxattr(p("x2").as_ptr(), c"user.b".as_ptr(), v, 1, 0).into(),
        );
        r(
            "lsetxattr_no",
            lsetxattr(q("f").as_ptr(), c"user.b".as_ptr(), v, 1, 0).into(),
        );
        let x2 = o(&p("x2"), O_RDONLY);
        r(
            "fsetxattr_ok",
            fsetxattr(x2, c"user.c".as_ptr(), v, 1, 0).into(),
        );
        r(
            "fsetxattr_no",
            fsetxattr(rd_no, c"user.c".as_ptr(), v, 1, 0).into(),
        );
        r(
            "removexattr_ok",
            removexattr(p("x2").as_ptr(), c"user.a".as_ptr()).into(),
        );
        r(
            "removexattr_no",
            removexattr(q("f").as_ptr(), c"user.k1".as_ptr()).into(),
        );
        r(
            "lremovexattr_ok",
            lremovexattr(p("x2").as_ptr(), c"user.b".as_ptr()).into(),
        );
        r(
            "lremovexattr_no",
            lremovexattr(q("f").as_ptr(), c"user.k2".as_ptr()).into(),
        );
        r(
            "fremovexattr_ok",
            fremovexattr(x2, c"user.c".as_ptr()).into(),
        );
        r(
            "fremovexattr_no",
            fremovexattr(rd_no, c"user.k3".as_ptr()).into(),
        );
        bind_and_connect(ws, &f);
        r(
            "rename_ok",
            syscall(SYS_rename, p("r1").as_ptr(), p("r2").as_ptr()),
        );
        r(
            "rename_into_no",
            syscall(SYS_rename, p("r5").as_ptr(), q("r").as_ptr()),
        );
        r(
            "renameat_ok",
            renameat(wsd, c"r3".as_ptr(), wsd, c"r4".as_ptr()).into(),
        );
        r(
            "renameat_out_no",
            renameat(fd_f, c"h".as_ptr(), wsd, c"stolen".as_ptr()).into(),
        );
        let ex = RENAME_EXCHANGE;
        r(
            "renameat2_exchange_no",
            renameat2(wsd, c"r4".as_ptr(), fd_f, c"g".as_ptr(), ex).into(),
        );
        let nr = RENAME_NOREPLACE;
        r(
            "renameat2_noreplace_ok",
            renameat2(wsd, c"r2".as_ptr(), wsd, c"r6".as_ptr(), nr).into(),
        );
        r("unlink_ok", syscall(SYS_unlink, p("u1").as_ptr()));
        r("unlink_no", syscall(SYS_unlink, q("i").as_ptr()));
        r("unlinkat_ok", unlinkat(wsd, c"u2".as_ptr(), 0).into());
        r("unlinkat_no", unlinkat(fd_f, c"t".as_ptr(), 0).into());
        r("rmdir_ok", syscall(SYS_rmdir, p("rd").as_ptr()));
        r("rmdir_no", syscall(SYS_rmdir, q("d").as_ptr()));
        r(
            "unlinkat_dir_ok",
            unlinkat(wsd, c"rd2".as_ptr(), AT_REMOVEDIR).into(),
        );
        r(
            "unlinkat_dir_no",
            unlinkat(fd_f, c"d2".as_ptr(), AT_REMOVEDIR).into(),
        );
        // Last, for the allow-all control's check that forbidden/f was really opened for
        // writing with O_TRUNC.
        ro("open_trunc_again", o(&q("f"), O_WRONLY | O_TRUNC));
    }
}

fn bind_and_connect(ws: &Path, f: &Path) {
    use libc::*;
    let addr = |p: &Path| {
        // SAFETY: sockaddr_un is plain data; all-zero is valid.
        let mut a: sockaddr_un = unsafe { std::mem::zeroed() };
        a.sun_family = AF_UNIX as u16;
        for (i, b) in p.as_os_str().as_bytes().iter().enumerate() {
            a.sun_path[i] = *b as i8;
        }
        a
    };
    let len = std::mem::size_of::<sockaddr_un>() as u32;
    // SAFETY: socket/bind/listen/connect with a properly sized sockaddr_un; descriptors closed.
    unsafe {
        let s = socket(AF_UNIX, SOCK_STREAM, 0);
        let a = addr(&ws.join("s.sock"));
        r(
            "bind_ok",
            bind(s, (&a as *const sockaddr_un).cast(), len).into(),
        );
        listen(s, 4);
        let s2 = socket(AF_UNIX, SOCK_STREAM, 0);
        let b = addr(&f.join("s.sock"));
        r(
            "bind_no",
            bind(s2, (&b as *const sockaddr_un).cast(), len).into(),
        );
        let cl = socket(AF_UNIX, SOCK_STREAM, 0);
        r(
            "connect_ok",
            connect(cl, (&a as *const sockaddr_un).cast(), len).into(),
        );
        close(cl);
        close(s2);
        close(s);
    }
}
