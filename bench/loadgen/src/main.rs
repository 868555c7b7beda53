//! Echo load generator for bench/net: N connections, each one blocking thread doing
//! "send S bytes, read the S bytes echoed back, check them" as fast as it can (closed loop, one
//! request in flight per connection), for a warm-up and then a timed window.
//!
//!     loadgen --tcp 127.0.0.1:8000 [--conns 4] [--size 1024] [--warmup 0.5] [--duration 3]
//!     loadgen --unix /tmp/echo.sock --server-pid 1234
//!
//! Prints one JSON line: requests completed inside the timed window, requests/s, latency
//! percentiles (µs) of those requests, and, with --server-pid, the server process's CPU time
//! over exactly that window (utime+stime from /proc/PID/stat, all threads), so the harness can report server CPU per request. The
//! load generator's own CPU time over the window is reported too (client_cpu_s): if it nears
//! one core while the server has spare CPU, the load generator is the bottleneck.
//! On an error (connect, echo mismatch, timeout) it prints {"ok": false, "error": ...}, exit 1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone)]
enum Target {
    Tcp(String),
    Unix(String),
}

struct Opts {
    target: Target,
    conns: usize,
    size: usize,
    warmup: f64,
    duration: f64,
    server_pid: Option<u32>,
}

trait Stream: Read + Write + Send {}
impl Stream for TcpStream {}
impl Stream for UnixStream {}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(t: &Target) -> Result<Box<dyn Stream>, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r: std::io::Result<Box<dyn Stream>> = match t {
            Target::Tcp(a) => TcpStream::connect(a).and_then(|s| {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Box::new(s) as Box<dyn Stream>)
            }),
            Target::Unix(p) => UnixStream::connect(p).and_then(|s| {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Box::new(s) as Box<dyn Stream>)
            }),
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(format!("connect: {e}")),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The window, fixed by the main thread once every connection is up.
struct Window {
    start: Instant,
    end: Instant,
}

/// One connection's closed loop; returns the latencies (ns) of the requests that completed
/// inside the timed window.
fn conn_loop(
    o: &Opts,
    id: usize,
    ready: &Barrier,
    go: &Barrier,
    win: &OnceLock<Window>,
) -> Result<Vec<u64>, String> {
    let conn = connect(&o.target);
    ready.wait(); // always reached, so a failed connect cannot deadlock the others
    go.wait();
    let mut s = conn?;
    let w = win.get().expect("window set before go");
    let mut msg: Vec<u8> = (0..o.size).map(|i| (i * 31 + id * 7) as u8).collect();
    let mut buf = vec![0u8; o.size];
    let mut lat = Vec::with_capacity(1 << 16);
    let mut k: u32 = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= w.end {
            break;
        }
        // Vary the head and tail of each message so a stale or short echo cannot pass the check.
        k = k.wrapping_add(1);
        msg[0] = k as u8;
        let last = o.size - 1;
        msg[last] = (k >> 8) as u8;
        s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
        s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
        let t1 = Instant::now();
        if buf != msg {
            return Err("echo mismatch".into());
        }
        if t1 >= w.start && t1 <= w.end {
            lat.push((t1 - t0).as_nanos() as u64);
        }
    }
    Ok(lat)
}

/// utime+stime of a whole process (every thread, living or exited), in seconds, from
/// /proc/PID/stat. The kernel keeps it precisely but shows it in USER_HZ ticks (10 ms): over a
/// 2 s window that is a resolution of 0.5 %.
fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5) (utime, stime) are at 11 and 12 after "pid (comm) ".
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux ABI this runs on (x86-64, aarch64).
    Some(ticks as f64 / 100.0)
}

fn fail(msg: &str) -> ! {
    println!("{{\"ok\": false, \"error\": {:?}}}", msg);
    std::process::exit(1)
}

fn parse() -> Opts {
    let mut a = std::env::args().skip(1);
    let mut o = Opts {
        target: Target::Tcp(String::new()),
        conns: 4,
        size: 1024,
        warmup: 0.5,
        duration: 3.0,
        server_pid: None,
    };
    let mut have_target = false;
    while let Some(k) = a.next() {
        let v = a.next().unwrap_or_else(|| fail(&format!("{k} needs a value")));
        let num = |v: &str| v.parse::<f64>().unwrap_or_else(|_| fail(&format!("bad {k}: {v}")));
        match k.as_str() {
            "--tcp" => (o.target, have_target) = (Target::Tcp(v), true),
            "--unix" => (o.target, have_target) = (Target::Unix(v), true),
            "--conns" => o.conns = num(&v) as usize,
            "--size" => o.size = num(&v) as usize,
            "--warmup" => o.warmup = num(&v),
            "--duration" => o.duration = num(&v),
            "--server-pid" => o.server_pid = Some(num(&v) as u32),
            _ => fail(&format!(
                "unknown option {k}; usage: loadgen --tcp HOST:PORT|--unix PATH [--conns N] \
                 [--size BYTES] [--warmup S] [--duration S] [--server-pid PID]"
            )),
        }
    }
    if !have_target || o.conns == 0 || o.size == 0 || o.duration <= 0.0 {
        fail("need --tcp or --unix, and positive --conns, --size, --duration");
    }
    o
}

fn main() {
    let o = Arc::new(parse());
    let ready = Arc::new(Barrier::new(o.conns + 1));
    let go = Arc::new(Barrier::new(o.conns + 1));
    let win = Arc::new(OnceLock::new());
    let handles: Vec<_> = (0..o.conns)
        .map(|id| {
            let (o, ready, go, win) = (o.clone(), ready.clone(), go.clone(), win.clone());
            thread::spawn(move || conn_loop(&o, id, &ready, &go, &win))
        })
        .collect();
    ready.wait();
    let now = Instant::now();
    let start = now + Duration::from_secs_f64(o.warmup);
    let end = start + Duration::from_secs_f64(o.duration);
    let _ = win.set(Window { start, end });
    go.wait();

    let pid = o.server_pid.map(|p| p.to_string());
    let sleep_until = |t: Instant| {
        let n = Instant::now();
        if t > n {
            thread::sleep(t - n)
        }
    };
    sleep_until(start);
    let (srv0, cli0) = (pid.as_deref().and_then(proc_cpu), proc_cpu("self"));
    sleep_until(end);
    let (srv1, cli1) = (pid.as_deref().and_then(proc_cpu), proc_cpu("self"));

    let mut lat = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(v)) => lat.extend(v),
            Ok(Err(e)) => fail(&e),
            Err(_) => fail("connection thread panicked"),
        }
    }
    lat.sort_unstable();
    let n = lat.len();
    if n == 0 {
        fail("no request completed in the timed window");
    }
    let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)] as f64 / 1e3;
    let mean = lat.iter().sum::<u64>() as f64 / n as f64 / 1e3;
    let mut out = format!(
        "{{\"ok\": true, \"target\": {:?}, \"conns\": {}, \"size\": {}, \"warmup_s\": {}, \
         \"duration_s\": {}, \"requests\": {}, \"rps\": {:.1}, \"mib_per_s\": {:.2}, \
         \"lat_mean_us\": {:.2}, \"lat_p50_us\": {:.2}, \"lat_p90_us\": {:.2}, \
         \"lat_p99_us\": {:.2}, \"lat_max_us\": {:.2}",
        match &o.target {
            Target::Tcp(a) => format!("tcp:{a}"),
            Target::Unix(p) => format!("unix:{p}"),
        },
        o.conns,
        o.size,
        o.warmup,
        o.duration,
        n,
        n as f64 / o.duration,
        n as f64 * o.size as f64 * 2.0 / o.duration / (1 << 20) as f64,
        mean,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat[n - 1] as f64 / 1e3,
    );
    if let (Some(a), Some(b)) = (srv0, srv1) {
        out += &format!(
            ", \"server_cpu_s\": {:.2}, \"server_cpu_us_per_req\": {:.3}, \"server_busy\": {:.3}",
            b - a,
            (b - a) * 1e6 / n as f64,
            (b - a) / o.duration,
        );
    } else if o.server_pid.is_some() {
        fail("cannot read the server's /proc/PID/stat (did it exit?)");
    }
    if let (Some(a), Some(b)) = (cli0, cli1) {
        out += &format!(
            ", \"client_cpu_s\": {:.2}, \"client_busy\": {:.3}",
            b - a,
            (b - a) / o.duration
        );
    }
    println!("{out}}}");
}
