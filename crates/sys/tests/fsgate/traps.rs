//! The supervisor's traps, each with its positive control, judged from outside where the
//! outcome is on disk.

use super::child::{c, cb, errno, r, ro};
use super::harness::{run, workspace, Install, Opts, TestJudge};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockade_sys::fsgate::ServeConfig;

pub const TESTS: &[(&str, fn())] = &[
    (
        "dev_stdout_proc_self_fd_and_dev_fd_mean_the_caller",
        caller_fds,
    ),
    (
        "links_onto_proc_self_never_reach_the_supervisor",
        proc_self_links,
    ),
    ("dev_tty_is_the_callers_controlling_terminal", dev_tty),
    ("fifo_opened_for_writing_does_not_block_a_worker", fifo),
    ("blocking_pool_is_bounded_eagain_beyond", fifo_bound),
    (
        "signals_never_restart_a_performed_call_wait_killable",
        signals,
    ),
    ("hostile_pointers_are_efault_page_end_paths_work", hostile),
    ("thousands_of_concurrent_creates_8x2000", concurrency),
    ("caller_killed_mid_call_no_descriptor_leak", killed),
    ("non_utf8_names_are_compared_as_bytes", names),
    (
        "symlinked_ancestor_and_dangling_symlink_judged_resolved",
        symlinks,
    ),
    ("callers_umask_and_cloexec_are_honoured", umask_cloexec),
    (
        "relative_unix_bind_and_connect_from_callers_cwd",
        relative_bind,
    ),
    ("o_tmpfile_then_linkat_through_proc_self_fd", tmpfile),
];

fn judge() -> Arc<TestJudge> {
    Arc::new(TestJudge::default())
}

fn slow_judge(ms: u64) -> Arc<TestJudge> {
    Arc::new(TestJudge {
        delay: Some(Duration::from_millis(ms)),
        ..Default::default()
    })
}

fn ok_run(name: &str, ws: &Path, j: Arc<TestJudge>, opts: Opts) -> super::harness::Run {
    let run = run(name, ws, j, opts);
    assert!(run.success, "child failed:\n{}\n{}", run.stdout, run.stderr);
    run
}

/// Child scenarios.
pub fn child(scenario: &str, ws: &Path) {
    match scenario {
        "caller_fds" => child_caller_fds(ws),
        "proc_self_links" => child_proc_self_links(ws),
        "tty" => child_tty(),
        "fifo" => child_fifo(ws),
        "fifo_bound" => child_fifo_bound(ws),
        "signals" => child_signals(ws),
        "hostile" => child_hostile(ws),
        "concurrency" => child_concurrency(ws),
        "killed" => child_killed(ws),
        "names" => child_names(ws),
        "symlinks" => child_symlinks(ws),
        "umask" => child_umask(ws),
        "relbind" => child_relbind(ws),
        "tmpfile" => child_tmpfile(ws),
        "bench" => super::bench::child_bench(ws),
        other => panic!("unknown scenario {other}"),
    }
}

fn open3(p: &CString, fl: i32) -> i32 {
    // SAFETY: a valid C string; the caller closes the descriptor.
    unsafe { libc::open(p.as_ptr(), fl, 0o644) }
}

fn write_str(fd: i32, s: &str) -> i64 {
    // SAFETY: `s` is readable for its length.
    unsafe { libc::write(fd, s.as_ptr().cast(), s.len()) as i64 }
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this process owns.
    unsafe { libc::close(fd) };
}

/// Open `p` with `fl`, write `s`, close; print `label=errno`.
fn open_write(label: &str, p: &CString, fl: i32, s: &str) {
    let fd = open3(p, fl);
    if fd < 0 {
        r(label, -1);
        return;
    }
    let w = write_str(fd, s);
    r(label, if w == s.len() as i64 { 0 } else { -1 });
    close(fd);
}

// ---- /dev/stdout, /proc/self/fd/N, /dev/fd/N ----------------------------------------------

fn caller_fds() {
    let ws = workspace("callerfds");
    std::fs::create_dir(ws.join("forbidden")).unwrap();
    std::fs::write(ws.join("forbidden/secret"), "orig").unwrap();
    std::fs::write(ws.join("ok"), "orig").unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/1", ws.join("out")).unwrap();
    let run = ok_run("caller_fds", &ws, judge(), Opts::new(&ws));
    for l in [
        "dev_stdout",
        "proc_self_fd_1",
        "dev_fd_1",
        "thread_self_fd_1",
        "dev_stderr",
        "symlink_to_proc_self_fd",
        "dev_fd_ok_trunc",
        "proc_self_cwd_create",
        "dev_stdout_creat",
    ] {
        run.expect(l, 0);
    }
    for m in ["m1", "m2", "m3", "m4", "m5", "m6"] {
        assert!(
            run.stdout.contains(&format!("marker-{m}\n")),
            "{m} missing:\n{}",
            run.stdout
        );
    }
    assert!(run.stderr.contains("marker-e1"), "{}", run.stderr);
    run.expect("dev_fd_forbidden", libc::EACCES);
    run.expect("proc_self_fd_forbidden", libc::EACCES);
    run.expect("dev_fd_closed", libc::ENOENT);
    assert_eq!(std::fs::read(ws.join("forbidden/secret")).unwrap(), b"orig");
    assert_eq!(std::fs::read(ws.join("ok")).unwrap(), b"via-fd");
    assert!(
        ws.join("pc").exists(),
        "/proc/self/cwd/pc created in the caller's cwd"
    );
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_caller_fds(ws: &Path) {
    use libc::*;
    let wr = O_WRONLY;
    open_write("dev_stdout", &cb(b"/dev/stdout"), wr, "marker-m1\n");
    open_write(
        "proc_self_fd_1",
        &cb(b"/proc/self/fd/1"),
        wr | O_APPEND,
        "marker-m2\n",
    );
    open_write("dev_fd_1", &cb(b"//dev/./fd/1"), wr, "marker-m3\n");
    std::thread::spawn(|| {
        open_write(
            "thread_self_fd_1",
            &cb(b"/proc/thread-self/fd/1"),
            O_WRONLY,
            "marker-m4\n",
        );
    })
    .join()
    .unwrap();
    open_write("dev_stderr", &cb(b"/dev/stderr"), wr, "marker-e1\n");
    open_write(
        "symlink_to_proc_self_fd",
        &c(&ws.join("out")),
        wr,
        "marker-m5\n",
    );
    open_write(
        "dev_stdout_creat",
        &cb(b"/dev/stdout"),
        wr | O_CREAT | O_TRUNC,
        "marker-m6\n",
    );
    // A read-only descriptor of a forbidden file (reads are not gated), reopened for writing.
    let ro_fd = open3(&c(&ws.join("forbidden/secret")), O_RDONLY);
    let via = |fd: i32, pfx: &str| cb(format!("{pfx}{fd}").as_bytes());
    ro("dev_fd_forbidden", open3(&via(ro_fd, "/dev/fd/"), O_WRONLY));
    ro(
        "proc_self_fd_forbidden",
        open3(&via(ro_fd, "/proc/self/fd/"), O_RDWR),
    );
    let ok_fd = open3(&c(&ws.join("ok")), O_RDONLY);
    open_write(
        "dev_fd_ok_trunc",
        &via(ok_fd, "/dev/fd/"),
        O_WRONLY | O_TRUNC,
        "via-fd",
    );
    ro("dev_fd_closed", open3(&cb(b"/dev/fd/987"), O_WRONLY));
    std::env::set_current_dir(ws).unwrap();
    ro(
        "proc_self_cwd_create",
        open3(&cb(b"/proc/self/cwd/pc"), O_CREAT | O_WRONLY),
    );
}

// ---- links onto /proc/self ----------------------------------------------------------------

fn proc_self_links() {
    let ws = workspace("procself");
    std::os::unix::fs::symlink("/proc/self", ws.join("s")).unwrap();
    std::os::unix::fs::symlink("/proc/self/mem", ws.join("m")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd", ws.join("fdl")).unwrap();
    let run = ok_run("proc_self_links", &ws, judge(), Opts::new(&ws));
    // A magic link along the path (the supervisor's /proc/<pid>/fd/0) is never traversed.
    run.expect("magic_link_in_path", libc::ELOOP);
    // Resolved by the supervisor, ws/s would be the supervisor's /proc/<pid>: refused.
    for l in [
        "link_fd_1",
        "link_mem",
        "link_mkdir",
        "link_attr",
        "supervisor_proc_fd",
        "supervisor_proc_mem",
    ] {
        run.expect(l, libc::EACCES);
    }
    // A final symlink to /proc/self/mem is rewritten to the caller's own: it writes the caller.
    run.expect("final_link_mem_open", 0);
    run.expect("final_link_mem_changed", 0);
    run.expect("proc_self_mem_open", 0);
    run.expect("proc_self_mem_changed", 0);
    let _ = std::fs::remove_dir_all(&ws);
}

static mut TARGET: [u8; 8] = *b"unchangd";

fn poke_self_mem(label: &str, path: &CString, val: &[u8; 8]) {
    let fd = open3(path, libc::O_RDWR);
    r(&format!("{label}_open"), fd.into());
    if fd < 0 {
        println!("{label}_changed=-1");
        return;
    }
    let addr = std::ptr::addr_of!(TARGET) as i64;
    // SAFETY: `val` is readable for 8 bytes; writing our own memory through /proc/self/mem.
    unsafe { libc::pwrite(fd, val.as_ptr().cast(), 8, addr) };
    // SAFETY: reading the static after the kernel wrote it; volatile so it is re-read.
    let now = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(TARGET)) };
    println!("{label}_changed={}", if &now == val { 0 } else { 1 });
    close(fd);
}

fn child_proc_self_links(ws: &Path) {
    use libc::*;
    let p = |n: &str| c(&ws.join(n));
    ro("link_fd_1", open3(&p("s/fd/1"), O_WRONLY));
    ro("link_mem", open3(&p("s/mem"), O_RDWR));
    // SAFETY: a valid C string.
    r(
        "link_mkdir",
        unsafe { mkdir(p("s/x").as_ptr(), 0o755) }.into(),
    );
    ro("link_attr", open3(&p("s/attr/current"), O_WRONLY));
    // SAFETY: a valid C string.
    r(
        "magic_link_in_path",
        unsafe { mkdir(p("fdl/0/x").as_ptr(), 0o755) }.into(),
    );
    // SAFETY: no arguments.
    let sup = unsafe { getppid() };
    ro(
        "supervisor_proc_fd",
        open3(&cb(format!("/proc/{sup}/fd/1").as_bytes()), O_WRONLY),
    );
    ro(
        "supervisor_proc_mem",
        open3(&cb(format!("/proc/{sup}/mem").as_bytes()), O_RDWR),
    );
    poke_self_mem("final_link_mem", &p("m"), b"changed1");
    poke_self_mem("proc_self_mem", &cb(b"/proc/self/mem"), b"changed2");
}

// ---- /dev/tty -------------------------------------------------------------------------------

fn dev_tty() {
    let ws = workspace("tty");
    let run = ok_run("tty", &ws, judge(), Opts::new(&ws));
    run.expect("no_ctty", libc::ENXIO);
    run.expect("pty", 0);
    run.expect("tiocsctty", 0);
    run.expect("dev_tty", 0);
    run.expect("dev_tty_is_the_slave", 0);
    run.expect("echo_through_master", 0);
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_tty() {
    use libc::*;
    // SAFETY: libc terminal calls on descriptors this process owns; buffers are local.
    unsafe {
        setsid();
        ro("no_ctty", open3(&cb(b"/dev/tty"), O_RDWR));
        let m = posix_openpt(O_RDWR | O_NOCTTY);
        grantpt(m);
        unlockpt(m);
        let mut name = [0 as c_char; 64];
        ptsname_r(m, name.as_mut_ptr(), name.len());
        let s = open(name.as_ptr(), O_RDWR | O_NOCTTY);
        r("pty", if m < 0 || s < 0 { -1 } else { 0 });
        r("tiocsctty", ioctl(s, TIOCSCTTY, 0).into());
        let t = open(c"/dev/tty".as_ptr(), O_RDWR);
        r("dev_tty", t.into());
        let (mut a, mut b): (stat, stat) = (std::mem::zeroed(), std::mem::zeroed());
        fstat(t, &mut a);
        fstat(s, &mut b);
        r(
            "dev_tty_is_the_slave",
            if t >= 0 && a.st_rdev == b.st_rdev {
                0
            } else {
                -1
            },
        );
        let w = write_str(t, "ping\n");
        let mut buf = [0u8; 16];
        let n = read(m, buf.as_mut_ptr().cast(), buf.len());
        let ok = w == 5 && n >= 4 && &buf[..4] == b"ping";
        r("echo_through_master", if ok { 0 } else { -1 });
    }
}

// ---- FIFOs ----------------------------------------------------------------------------------

fn fifo() {
    let ws = workspace("fifo");
    let mut opts = Opts::new(&ws);
    opts.cfg = ServeConfig {
        workers: 1,
        blocking: 4,
    };
    let run = ok_run("fifo", &ws, judge(), opts);
    run.expect("mkfifo", 0);
    run.expect("creates_while_writer_waits", 0);
    run.expect("nonblock_no_reader", libc::ENXIO);
    assert_eq!(run.get("fifo_read"), "hello", "{}", run.stderr);
    assert_eq!(
        std::fs::read_dir(&ws).unwrap().count(),
        21,
        "fifo + 20 files"
    );
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_fifo(ws: &Path) {
    use libc::*;
    let fp = c(&ws.join("fifo"));
    // SAFETY: a valid C string.
    r("mkfifo", unsafe { mkfifo(fp.as_ptr(), 0o644) }.into());
    ro("nonblock_no_reader", open3(&fp, O_WRONLY | O_NONBLOCK));
    let fp2 = fp.clone();
    let writer = std::thread::spawn(move || {
        let fd = open3(&fp2, O_WRONLY);
        write_str(fd, "hello");
        self::close(fd);
    });
    std::thread::sleep(Duration::from_millis(100));
    // With one worker, these are served while the writer's open waits on the blocking pool.
    let t = Instant::now();
    let mut bad = 0;
    for i in 0..20 {
        let fd = open3(&c(&ws.join(format!("c{i}"))), O_CREAT | O_WRONLY);
        bad += (fd < 0) as i32;
        self::close(fd);
    }
    let fast = t.elapsed() < Duration::from_secs(2);
    r(
        "creates_while_writer_waits",
        if bad == 0 && fast { 0 } else { -1 },
    );
    let rd = open3(&fp, O_RDONLY);
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { read(rd, buf.as_mut_ptr().cast(), buf.len()) };
    writer.join().unwrap();
    println!(
        "fifo_read={}",
        String::from_utf8_lossy(&buf[..n.max(0) as usize])
    );
}

fn fifo_bound() {
    let ws = workspace("fifobound");
    let mut opts = Opts::new(&ws);
    opts.cfg = ServeConfig {
        workers: 2,
        blocking: 0,
    };
    let run = ok_run("fifo_bound", &ws, judge(), opts);
    run.expect("pool_full", libc::EAGAIN);
    run.expect("rdwr_never_blocks", 0);
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_fifo_bound(ws: &Path) {
    use libc::*;
    let fp = c(&ws.join("fifo"));
    // SAFETY: a valid C string.
    unsafe { mkfifo(fp.as_ptr(), 0o644) };
    ro("pool_full", open3(&fp, O_WRONLY));
    ro("rdwr_never_blocks", open3(&fp, O_RDWR));
}

// ---- signals --------------------------------------------------------------------------------

fn signals() {
    let ws = workspace("signals");
    let run = ok_run("signals", &ws, slow_judge(150), Opts::new(&ws));
    run.expect("mkdir_slow", 0);
    run.expect("create_excl_slow", 0);
    assert!(run.get("signals_sent").parse::<u32>().unwrap() > 5);
    // Control: the same without WAIT_KILLABLE_RECV: the call is interrupted after the
    // supervisor received it, restarted, and performed twice (EEXIST).
    let ws2 = workspace("signals-control");
    let mut opts = Opts::new(&ws2);
    opts.install = Install::NotKillable;
    let ctl = ok_run("signals", &ws2, slow_judge(150), opts);
    let (a, b) = (ctl.get("mkdir_slow"), ctl.get("create_excl_slow"));
    assert!(
        a == libc::EEXIST.to_string() || b == libc::EEXIST.to_string(),
        "control shows no restart: {a} {b}"
    );
    let _ = std::fs::remove_dir_all(&ws);
    let _ = std::fs::remove_dir_all(&ws2);
}

extern "C" fn on_usr1(_: i32) {}

fn child_signals(ws: &Path) {
    use libc::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    // SAFETY: installing a handler that does nothing, with SA_RESTART (as most programs do).
    unsafe {
        let mut sa: sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGUSR1, &sa, std::ptr::null_mut());
    }
    static STOP: AtomicBool = AtomicBool::new(false);
    static SENT: AtomicU32 = AtomicU32::new(0);
    // SAFETY: no arguments.
    let main = unsafe { pthread_self() };
    let main_id = main as usize;
    let pest = std::thread::spawn(move || {
        // A bounded burst: without WAIT_KILLABLE_RECV (the control) the call restarts for as
        // long as signals come, so the burst must end on its own.
        for _ in 0..40 {
            if STOP.load(Ordering::SeqCst) {
                break;
            }
            // SAFETY: signalling a thread of this process that stays alive until joined.
            unsafe { pthread_kill(main_id as pthread_t, SIGUSR1) };
            SENT.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let md = c(&ws.join("slowdir"));
    // SAFETY: a valid C string.
    r("mkdir_slow", unsafe { mkdir(md.as_ptr(), 0o755) }.into());
    ro(
        "create_excl_slow",
        open3(&c(&ws.join("slowfile")), O_CREAT | O_EXCL | O_WRONLY),
    );
    STOP.store(true, Ordering::SeqCst);
    pest.join().unwrap();
    println!("signals_sent={}", SENT.load(Ordering::SeqCst));
}

// ---- hostile pointers -----------------------------------------------------------------------

fn hostile() {
    let ws = workspace("hostile");
    let run = ok_run("hostile", &ws, judge(), Opts::new(&ws));
    for l in [
        "null_path",
        "pointer_1",
        "unterminated_into_hole",
        "mkdir_in_hole",
        "rename_null_new",
        "utimensat_bad_times",
        "setxattr_bad_value",
        "bind_bad_addr",
        "symlink_bad_target",
    ] {
        run.expect(l, libc::EFAULT);
    }
    run.expect("too_long", libc::ENAMETOOLONG);
    run.expect("emfile", libc::EMFILE);
    run.expect("judge_panics", libc::EACCES);
    assert!(!ws.join("panicky").exists());
    run.expect("ends_at_page_end", 0);
    run.expect("after", 0);
    assert!(ws.join("pageend").exists() && ws.join("after").exists());
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_hostile(ws: &Path) {
    use libc::*;
    // SAFETY: deliberately bad pointers handed to the kernel (which reports EFAULT;
    // the supervisor reads them with process_vm_readv); the mapping is our own.
    unsafe {
        let bad = std::ptr::dangling::<c_char>();
        ro(
            "null_path",
            open(std::ptr::null(), O_CREAT | O_WRONLY, 0o644),
        );
        ro("pointer_1", open(bad, O_WRONLY));
        let page = 4096usize;
        let map = mmap(
            std::ptr::null_mut(),
            2 * page,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        munmap(map.add(page).cast(), page);
        let name = format!("{}/pageend\0", ws.display());
        let at = map.add(page - name.len());
        std::ptr::copy_nonoverlapping(name.as_ptr(), at, name.len());
        ro(
            "ends_at_page_end",
            open(at.cast(), O_CREAT | O_WRONLY, 0o644),
        );
        // 100 bytes without a NUL, then the unmapped page (the kernel, too, answers EFAULT).
        std::ptr::write_bytes(map, b'a', page);
        let tail = map.add(page - 100);
        ro(
            "unterminated_into_hole",
            open(tail.cast(), O_CREAT | O_WRONLY, 0o644),
        );
        r("mkdir_in_hole", mkdir(map.add(page).cast(), 0o755).into());
        let long = vec![b'x'; 5000];
        let mut long = long;
        long.push(0);
        ro(
            "too_long",
            open(long.as_ptr().cast(), O_CREAT | O_WRONLY, 0o644),
        );
        let a = c(&ws.join("pageend"));
        r(
            "rename_null_new",
            syscall(SYS_rename, a.as_ptr(), std::ptr::null::<c_char>()),
        );
        let badts = std::ptr::dangling::<timespec>();
        r(
            "utimensat_bad_times",
            utimensat(AT_FDCWD, a.as_ptr(), badts, 0).into(),
        );
        r(
            "setxattr_bad_value",
            setxattr(a.as_ptr(), c"user.x".as_ptr(), bad.cast(), 4, 0).into(),
        );
        let s = socket(AF_UNIX, SOCK_STREAM, 0);
        r(
            "bind_bad_addr",
            bind(s, 16usize as *const sockaddr, 20).into(),
        );
        r(
            "symlink_bad_target",
            symlink(bad, c(&ws.join("sl")).as_ptr()).into(),
        );
        // The caller's descriptor table is full: ADDFD fails, the call is answered EMFILE
        // (not left pending).
        let mut lim: rlimit = std::mem::zeroed();
        getrlimit(RLIMIT_NOFILE, &mut lim);
        let soft = lim.rlim_cur;
        lim.rlim_cur = 3;
        setrlimit(RLIMIT_NOFILE, &lim);
        let emfile = c(&ws.join("emfile"));
        let fd = open(emfile.as_ptr(), O_CREAT | O_WRONLY, 0o644);
        let e = errno();
        lim.rlim_cur = soft;
        setrlimit(RLIMIT_NOFILE, &lim);
        println!("emfile={}", if fd < 0 { e } else { 0 });
        ro(
            "judge_panics",
            open(c(&ws.join("panicky")).as_ptr(), O_CREAT | O_WRONLY, 0o644),
        );
        r("after", mkdir(c(&ws.join("after")).as_ptr(), 0o755).into());
    }
}

// ---- concurrency ----------------------------------------------------------------------------

fn concurrency() {
    let ws = workspace("conc");
    let mut opts = Opts::new(&ws);
    opts.cfg = ServeConfig::default();
    let t = Instant::now();
    let run = ok_run("concurrency", &ws, judge(), opts);
    let took = t.elapsed();
    run.expect("all_created", 0);
    let mut n = 0;
    for d in std::fs::read_dir(&ws).unwrap() {
        n += std::fs::read_dir(d.unwrap().path()).unwrap().count();
    }
    assert_eq!(n, 8 * 2000);
    println!(
        "    8 x 2000 gated creates: {took:.2?} ({:.1} µs per create, wall)",
        took.as_secs_f64() * 1e6 / 16000.0
    );
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_concurrency(ws: &Path) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dir = ws.join(format!("t{t}"));
            std::thread::spawn(move || {
                // SAFETY: a valid C string.
                unsafe { libc::mkdir(c(&dir).as_ptr(), 0o755) };
                let mut bad = 0;
                for i in 0..2000 {
                    let fd = open3(
                        &c(&dir.join(format!("f{i}"))),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    );
                    bad += (fd < 0) as u32;
                    close(fd);
                }
                bad
            })
        })
        .collect();
    let bad: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    r("all_created", if bad == 0 { 0 } else { -1 });
}

// ---- a caller killed mid-call ---------------------------------------------------------------

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn killed() {
    let ws = workspace("killed");
    let before = fd_count();
    let run = ok_run("killed", &ws, slow_judge(300), Opts::new(&ws));
    run.expect("grandchild_killed", 0);
    run.expect("after_kill", 0);
    assert!(
        run.get("kill_latency_ms").parse::<u64>().unwrap() < 250,
        "SIGKILL is not delayed by the gate"
    );
    assert_eq!(
        fd_count(),
        before,
        "the supervisor closed what it opened for the dead caller"
    );
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_killed(ws: &Path) {
    use libc::*;
    let p = c(&ws.join("slowkilled"));
    // SAFETY: this child is single-threaded here; the grandchild only makes raw calls and exits.
    let pid = unsafe { fork() };
    if pid == 0 {
        let fd = open3(&p, O_CREAT | O_WRONLY);
        stockade_sys::exit_now(if fd >= 0 { 0 } else { 1 });
    }
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let mut st = 0;
    // SAFETY: signalling and reaping our own child.
    unsafe {
        kill(pid, SIGKILL);
        waitpid(pid, &mut st, 0);
    }
    println!("kill_latency_ms={}", t.elapsed().as_millis());
    r(
        "grandchild_killed",
        if WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL {
            0
        } else {
            -1
        },
    );
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: a valid C string.
    r(
        "after_kill",
        unsafe { mkdir(c(&ws.join("after_kill")).as_ptr(), 0o755) }.into(),
    );
}

// ---- names ----------------------------------------------------------------------------------

fn names() {
    let ws = workspace("names");
    std::fs::create_dir(ws.join("forbidden")).unwrap();
    let j = judge();
    let run = ok_run("names", &ws, Arc::clone(&j), Opts::new(&ws));
    run.expect("non_utf8_create", 0);
    run.expect("forbidden_prefix_bytes_allowed", 0);
    run.expect("non_utf8_under_forbidden", libc::EACCES);
    run.expect("non_utf8_dir", 0);
    run.expect("forbidden_under_non_utf8", libc::EACCES);
    let name = |b: &[u8]| ws.join(super::harness::os(b));
    assert!(name(b"\xff\xfe").exists());
    assert!(name(b"forbidden\xff").is_dir());
    assert!(!ws
        .join("forbidden")
        .join(super::harness::os(b"\xff"))
        .exists());
    assert!(!name(b"\xc3").join("forbidden").exists());
    let log = j.log.lock().unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("\\xFF\\xFE") || l.contains("\\xff\\xfe")),
        "{log:#?}"
    );
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_names(ws: &Path) {
    use libc::*;
    let p = |b: &[u8]| {
        let mut v = ws.as_os_str().as_bytes().to_vec();
        v.push(b'/');
        v.extend_from_slice(b);
        cb(&v)
    };
    ro(
        "non_utf8_create",
        open3(&p(b"\xff\xfe"), O_CREAT | O_WRONLY),
    );
    // SAFETY: valid C strings.
    unsafe {
        r(
            "forbidden_prefix_bytes_allowed",
            mkdir(p(b"forbidden\xff").as_ptr(), 0o755).into(),
        );
        ro(
            "non_utf8_under_forbidden",
            open3(&p(b"forbidden/\xff"), O_CREAT | O_WRONLY),
        );
        r("non_utf8_dir", mkdir(p(b"\xc3").as_ptr(), 0o755).into());
        r(
            "forbidden_under_non_utf8",
            mkdir(p(b"\xc3/forbidden").as_ptr(), 0o755).into(),
        );
    }
}

// ---- symlinks -------------------------------------------------------------------------------

fn symlinks() {
    let ws = workspace("symlinks");
    std::fs::create_dir_all(ws.join("forbidden")).unwrap();
    std::fs::create_dir_all(ws.join("adir")).unwrap();
    let ln = |t: &str, l: &str| std::os::unix::fs::symlink(t, ws.join(l)).unwrap();
    ln("forbidden", "link");
    ln("adir", "oklink");
    ln("forbidden/new", "dangling_no");
    ln("made_by_link", "dangling_ok");
    ln(&ws.join("forbidden/abs").display().to_string(), "abs_no");
    ln("loop2", "loop1");
    ln("loop1", "loop2");
    std::fs::write(ws.join("forbidden/e1"), "orig").unwrap();
    let j = judge();
    let run = ok_run("symlinks", &ws, Arc::clone(&j), Opts::new(&ws));
    // Same-directory renames (resolved once for both names) through a symlinked parent.
    run.expect("same_dir_rename_ok", 0);
    run.expect("same_dir_rename_via_link_no", libc::EACCES);
    assert!(ws.join("adir/s2").exists() && ws.join("forbidden/e1").exists());
    for l in [
        "ancestor_open",
        "ancestor_mkdir",
        "ancestor_rename_into",
        "dangling_creat",
        "absolute_dangling",
    ] {
        run.expect(l, libc::EACCES);
    }
    run.expect("ok_ancestor", 0);
    run.expect("ok_dangling", 0);
    run.expect("dangling_excl", libc::EEXIST);
    run.expect("nofollow", libc::ELOOP);
    run.expect("loop", libc::ELOOP);
    assert!(ws.join("adir/x").exists() && ws.join("made_by_link").exists());
    assert_eq!(
        std::fs::read_dir(ws.join("forbidden")).unwrap().count(),
        1,
        "only e1"
    );
    let log = j.log.lock().unwrap();
    let renamed = format!(
        "from: {:?}, to: {:?}",
        ws.join("adir/s1"),
        ws.join("adir/s2")
    );
    assert!(log.iter().any(|l| l.contains(&renamed)), "{log:#?}");
    let want = format!("{:?}", ws.join("adir/x"));
    assert!(
        log.iter().any(|l| l.contains(&want)),
        "judge saw the resolved path: {log:#?}"
    );
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_symlinks(ws: &Path) {
    use libc::*;
    let p = |n: &str| c(&ws.join(n));
    let cw = O_CREAT | O_WRONLY;
    ro("ancestor_open", open3(&p("link/x"), cw));
    // SAFETY: valid C strings.
    unsafe {
        r("ancestor_mkdir", mkdir(p("link/y").as_ptr(), 0o755).into());
        ro("ok_ancestor", open3(&p("oklink/x"), cw));
        r(
            "ancestor_rename_into",
            rename(p("oklink/x").as_ptr(), p("link/x").as_ptr()).into(),
        );
    }
    ro("dangling_creat", open3(&p("dangling_no"), cw));
    ro("ok_dangling", open3(&p("dangling_ok"), cw));
    ro("dangling_excl", open3(&p("dangling_no"), cw | O_EXCL));
    ro("absolute_dangling", open3(&p("abs_no"), cw));
    ro("nofollow", open3(&p("oklink"), O_WRONLY | O_NOFOLLOW));
    ro("loop", open3(&p("loop1"), cw));
    ro("mk_s1", open3(&p("oklink/s1"), cw));
    // SAFETY: valid C strings.
    unsafe {
        let (a, b) = (p("oklink/s1"), p("oklink/s2"));
        r("same_dir_rename_ok", rename(a.as_ptr(), b.as_ptr()).into());
        let (a, b) = (p("link/e1"), p("link/e2"));
        r(
            "same_dir_rename_via_link_no",
            rename(a.as_ptr(), b.as_ptr()).into(),
        );
    }
}

// ---- umask, O_CLOEXEC -----------------------------------------------------------------------

fn umask_cloexec() {
    let ws = workspace("umask");
    let run = ok_run("umask", &ws, judge(), Opts::new(&ws));
    run.expect("cloexec", 0);
    run.expect("no_cloexec", 0);
    let mode = |n: &str| match std::fs::symlink_metadata(ws.join(n)) {
        Ok(m) => m.mode() & 0o7777,
        Err(e) => panic!("{n}: {e}\n{}\n{}", run.stdout, run.stderr),
    };
    assert_eq!(mode("um_f"), 0o640);
    assert_eq!(mode("um_d"), 0o750);
    assert_eq!(
        mode("um_creat"),
        0o640,
        "creat's mode is its second argument"
    );
    assert_eq!(mode("um_fifo"), 0o640);
    assert_eq!(mode("um0"), 0o666, "umask 0 afterwards: no stale mask");
    assert!(std::fs::symlink_metadata(ws.join("um.sock"))
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(mode("um.sock"), 0o750, "bind applies the caller's umask");
    // A umask changed by a sibling thread (shared fs_struct) and inherited across fork: each
    // creation after the change gets the new mask (the supervisor's cache must not be stale).
    for i in 0..20 {
        let want = if i % 2 == 0 { 0o600 } else { 0o640 };
        assert_eq!(mode(&format!("sib{i}")), want, "sib{i}");
    }
    assert_eq!(mode("forked"), 0o604, "a forked child inherits the umask");
    assert_eq!(
        mode("forked_after"),
        0o660,
        "the parent's change after the fork"
    );
    run.expect("umask_returns_old", 0);
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_umask(ws: &Path) {
    use libc::*;
    let p = |n: &str| c(&ws.join(n));
    // SAFETY: umask and creations with valid C strings; descriptors closed.
    unsafe {
        umask(0o027);
        close(open(p("um_f").as_ptr(), O_CREAT | O_WRONLY, 0o666));
        close(syscall(SYS_creat, p("um_creat").as_ptr(), 0o666) as i32);
        mkdir(p("um_d").as_ptr(), 0o777);
        mknod(p("um_fifo").as_ptr(), S_IFIFO | 0o666, 0);
        let s = socket(AF_UNIX, SOCK_STREAM, 0);
        let mut a: sockaddr_un = std::mem::zeroed();
        a.sun_family = AF_UNIX as u16;
        for (i, b) in ws.join("um.sock").as_os_str().as_bytes().iter().enumerate() {
            a.sun_path[i] = *b as c_char;
        }
        bind(
            s,
            (&a as *const sockaddr_un).cast(),
            std::mem::size_of::<sockaddr_un>() as u32,
        );
        umask(0);
        close(open(p("um0").as_ptr(), O_CREAT | O_WRONLY, 0o666));
        let fd = open(p("ce").as_ptr(), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644);
        r(
            "cloexec",
            if fcntl(fd, F_GETFD) & FD_CLOEXEC != 0 {
                0
            } else {
                -1
            },
        );
        let fd2 = open(p("nce").as_ptr(), O_CREAT | O_WRONLY, 0o644);
        r(
            "no_cloexec",
            if fcntl(fd2, F_GETFD) & FD_CLOEXEC == 0 {
                0
            } else {
                -1
            },
        );
        // umask(2) still answers the previous mask (the call is let through to the kernel).
        umask(0o022);
        let old = umask(0o022);
        r("umask_returns_old", if old == 0o022 { 0 } else { -1 });
        // Warm the cache for the main thread, then change the umask from another thread.
        for i in 0..20 {
            let mask = if i % 2 == 0 { 0o077 } else { 0o027 };
            std::thread::spawn(move || umask(mask)).join().unwrap();
            close(open(
                p(&format!("sib{i}")).as_ptr(),
                O_CREAT | O_WRONLY,
                0o666,
            ));
        }
        umask(0o073);
        let pid = fork();
        if pid == 0 {
            close(open(p("forked").as_ptr(), O_CREAT | O_WRONLY, 0o666));
            stockade_sys::exit_now(0);
        }
        let mut st = 0;
        waitpid(pid, &mut st, 0);
        umask(0o017);
        close(open(p("forked_after").as_ptr(), O_CREAT | O_WRONLY, 0o666));
    }
}

// ---- relative unix bind ----------------------------------------------------------------------

fn relative_bind() {
    let ws = workspace("relbind");
    std::fs::create_dir_all(ws.join("adir/forbidden")).unwrap();
    std::fs::write(ws.join("adir/forbidden/x"), "orig").unwrap();
    let run = ok_run("relbind", &ws, judge(), Opts::new(&ws));
    run.expect("bind_relative", 0);
    run.expect("connect_relative", 0);
    run.expect("bind_relative_forbidden", libc::EACCES);
    run.expect("bind_abstract", 0);
    run.expect("setxattr_relative", 0);
    run.expect("chmod_relative", 0);
    run.expect("truncate_relative", 0);
    run.expect("truncate_over_fsize", libc::EFBIG);
    run.expect("truncate_under_fsize", 0);
    assert_eq!(std::fs::metadata(ws.join("adir/relx")).unwrap().len(), 100);
    run.expect("setxattr_relative_forbidden", libc::EACCES);
    assert!(std::fs::symlink_metadata(ws.join("adir/rel.sock"))
        .unwrap()
        .file_type()
        .is_socket());
    assert!(!ws.join("adir/forbidden/s").exists());
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_relbind(ws: &Path) {
    use libc::*;
    std::env::set_current_dir(ws.join("adir")).unwrap();
    let addr = |p: &[u8]| {
        // SAFETY: sockaddr_un is plain data; all-zero is valid.
        let mut a: sockaddr_un = unsafe { std::mem::zeroed() };
        a.sun_family = AF_UNIX as u16;
        for (i, b) in p.iter().enumerate() {
            a.sun_path[i] = *b as c_char;
        }
        a
    };
    let len = std::mem::size_of::<sockaddr_un>() as u32;
    // SAFETY: sockets with properly sized addresses.
    unsafe {
        let s = socket(AF_UNIX, SOCK_STREAM, 0);
        let a = addr(b"rel.sock");
        r(
            "bind_relative",
            bind(s, (&a as *const sockaddr_un).cast(), len).into(),
        );
        listen(s, 1);
        let cl = socket(AF_UNIX, SOCK_STREAM, 0);
        r(
            "connect_relative",
            connect(cl, (&a as *const sockaddr_un).cast(), len).into(),
        );
        let s2 = socket(AF_UNIX, SOCK_STREAM, 0);
        let b = addr(b"forbidden/s");
        r(
            "bind_relative_forbidden",
            bind(s2, (&b as *const sockaddr_un).cast(), len).into(),
        );
        let s3 = socket(AF_UNIX, SOCK_STREAM, 0);
        let ab = addr(b"\0fsgate-abstract-test");
        r(
            "bind_abstract",
            bind(s3, (&ab as *const sockaddr_un).cast(), 2 + 21).into(),
        );
        // Relative paths of the other path-only calls resolve from the caller's cwd too.
        close(open(c"relx".as_ptr(), O_CREAT | O_WRONLY, 0o644));
        let v = b"v".as_ptr().cast();
        r(
            "setxattr_relative",
            setxattr(c"relx".as_ptr(), c"user.r".as_ptr(), v, 1, 0).into(),
        );
        r("chmod_relative", chmod(c"relx".as_ptr(), 0o600).into());
        r("truncate_relative", truncate(c"relx".as_ptr(), 0).into());
        // The caller's RLIMIT_FSIZE holds for a truncate the supervisor performs.
        signal(SIGXFSZ, SIG_IGN);
        let mut lim: rlimit = std::mem::zeroed();
        getrlimit(RLIMIT_FSIZE, &mut lim);
        lim.rlim_cur = 4096;
        setrlimit(RLIMIT_FSIZE, &lim);
        r(
            "truncate_over_fsize",
            truncate(c"relx".as_ptr(), 1 << 30).into(),
        );
        r(
            "truncate_under_fsize",
            truncate(c"relx".as_ptr(), 100).into(),
        );
        let fx = c"forbidden/x".as_ptr();
        r(
            "setxattr_relative_forbidden",
            setxattr(fx, c"user.r".as_ptr(), v, 1, 0).into(),
        );
    }
}

// ---- O_TMPFILE + linkat ----------------------------------------------------------------------

fn tmpfile() {
    let ws = workspace("tmpfile");
    std::fs::create_dir(ws.join("forbidden")).unwrap();
    let run = ok_run("tmpfile", &ws, judge(), Opts::new(&ws));
    run.expect("o_tmpfile", 0);
    run.expect("linkat_proc_self_fd", 0);
    run.expect("linkat_into_forbidden", libc::EACCES);
    assert_eq!(std::fs::read(ws.join("linked")).unwrap(), b"tmpdata");
    assert_eq!(std::fs::read_dir(ws.join("forbidden")).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&ws);
}

fn child_tmpfile(ws: &Path) {
    use libc::*;
    let fd = open3(&c(ws), O_TMPFILE | O_WRONLY);
    r("o_tmpfile", fd.into());
    write_str(fd, "tmpdata");
    let via = cb(format!("/proc/self/fd/{fd}").as_bytes());
    // SAFETY: valid C strings.
    unsafe {
        let to = c(&ws.join("linked"));
        r(
            "linkat_proc_self_fd",
            linkat(
                AT_FDCWD,
                via.as_ptr(),
                AT_FDCWD,
                to.as_ptr(),
                AT_SYMLINK_FOLLOW,
            )
            .into(),
        );
        let no = c(&ws.join("forbidden/linked"));
        r(
            "linkat_into_forbidden",
            linkat(
                AT_FDCWD,
                via.as_ptr(),
                AT_FDCWD,
                no.as_ptr(),
                AT_SYMLINK_FOLLOW,
            )
            .into(),
        );
    }
    let _ = errno();
}

// ---- cost per intercepted call ---------------------------------------------------------------
