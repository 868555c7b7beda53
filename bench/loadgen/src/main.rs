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
//!
//! Other modes (same window, same JSON fields; one "request" is one unit of their work):
//!
//!     loadgen --tcp 127.0.0.1:8000 --churn [--conns 10]   # connection churn
//!     loadgen --udp 127.0.0.1:8000 [--conns 4]             # UDP echo
//!     loadgen --tcp 127.0.0.1:8000 --bulk 268435456        # one flow-controlled bulk transfer
//!
//! --churn: each of the N threads repeatedly connects, sends S bytes, reads the S bytes echoed
//! back and checks them, half-closes (shutdown(SHUT_WR)) and reads until the server's EOF (so
//! the server has handled the whole connection, close included), then closes: one request =
//! one connection.
//! --udp: each thread has its own UDP socket; it sends a S-byte datagram (thread id and
//! sequence number in its head and tail), waits up to 100 ms for the echo and checks it byte for
//! byte; an echo that does not come in time is counted as lost (a late echo of an earlier
//! datagram is recognised and skipped). One request = one datagram echoed.
//! --bulk BYTES: one connection writes BYTES (1 MiB blocks, each with its index in its head and
//! tail) as fast as the server takes them, half-closes, and reads the server's reply line
//! "<bytes received> <adler32 of them> [key=value ...]", which must match what was sent. A
//! warm-up transfer of BYTES/16 on its own connection comes first; the timed window (and the
//! server CPU) is the timed transfer, from connect to the reply.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone)]
enum Target {
    Tcp(String),
    Unix(String),
    Udp(String),
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Echo,
    Churn,
    Udp,
    Bulk(u64),
}

struct Opts {
    target: Target,
    conns: usize,
    size: usize,
    warmup: f64,
    duration: f64,
    server_pid: Option<u32>,
    mode: Mode,
}

trait Stream: Read + Write + Send {
    fn shutdown_write(&self) -> std::io::Result<()>;
}
impl Stream for TcpStream {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
impl Stream for UnixStream {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

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
            Target::Udp(_) => unreachable!("UDP has no stream"),
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

/// Per-thread result: latencies (ns) of the requests completed inside the window, and for UDP
/// the datagrams sent and lost over the whole run (warm-up included).
struct Done {
    lat: Vec<u64>,
    sent: u64,
    lost: u64,
}

fn worker(
    o: &Opts,
    id: usize,
    ready: &Barrier,
    go: &Barrier,
    win: &OnceLock<Window>,
) -> Result<Done, String> {
    match o.mode {
        Mode::Echo => conn_loop(o, id, ready, go, win).map(|lat| Done { lat, sent: 0, lost: 0 }),
        Mode::Churn => {
            ready.wait();
            go.wait();
            churn_loop(o, id, win.get().expect("window set before go"))
        }
        Mode::Udp => {
            let sock = udp_socket(&o.target);
            ready.wait();
            go.wait();
            udp_loop(o, id, sock?, win.get().expect("window set before go"))
        }
        Mode::Bulk(_) => unreachable!("bulk runs on the main thread"),
    }
}

/// Connection churn: connect, send S bytes, read the echo and check it, half-close, read the
/// server's EOF, close. Any failure (refused connection included) fails the run.
fn churn_loop(o: &Opts, id: usize, w: &Window) -> Result<Done, String> {
    let Target::Tcp(addr) = &o.target else { return Err("--churn needs --tcp".into()) };
    let mut msg: Vec<u8> = (0..o.size).map(|i| (i * 31 + id * 7) as u8).collect();
    let mut buf = vec![0u8; o.size];
    let mut lat = Vec::with_capacity(1 << 16);
    let mut k: u32 = 0;
    let last = o.size - 1;
    loop {
        let t0 = Instant::now();
        if t0 >= w.end {
            break;
        }
        k = k.wrapping_add(1);
        msg[0] = k as u8;
        msg[last] = (k >> 8) as u8;
        let mut s = TcpStream::connect(addr.as_str()).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| format!("timeout: {e}"))?;
        s.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| format!("timeout: {e}"))?;
        s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
        s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
        if buf != msg {
            return Err("echo mismatch".into());
        }
        s.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(_) => return Err("data after the echo".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "the server did not close the connection within {} s of the client's EOF \
                     (a transport must close when eof_received() returns a false value)",
                    IO_TIMEOUT.as_secs()
                ))
            }
            Err(e) => return Err(format!("waiting for the server's EOF: {e}")),
        }
        drop(s);
        let t1 = Instant::now();
        if t1 >= w.start && t1 <= w.end {
            lat.push((t1 - t0).as_nanos() as u64);
        }
    }
    Ok(Done { lat, sent: 0, lost: 0 })
}

const UDP_TIMEOUT: Duration = Duration::from_millis(100);

fn udp_socket(t: &Target) -> Result<UdpSocket, String> {
    let Target::Udp(addr) = t else { return Err("UDP mode needs --udp".into()) };
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    s.connect(addr.as_str()).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(UDP_TIMEOUT)).map_err(|e| format!("timeout: {e}"))?;
    Ok(s)
}

/// UDP echo, one datagram in flight per thread; head and tail carry (thread id, sequence).
fn udp_loop(o: &Opts, id: usize, s: UdpSocket, w: &Window) -> Result<Done, String> {
    if o.size < 16 {
        return Err("--udp needs --size >= 16".into());
    }
    let mut msg: Vec<u8> = (0..o.size).map(|i| (i * 31 + id * 7) as u8).collect();
    let mut buf = vec![0u8; o.size + 1];
    let mut lat = Vec::with_capacity(1 << 16);
    let (mut seq, mut sent, mut lost) = (0u32, 0u64, 0u64);
    let tail = o.size - 8;
    let idb = (id as u32).to_le_bytes();
    'send: loop {
        let t0 = Instant::now();
        if t0 >= w.end {
            break;
        }
        seq = seq.wrapping_add(1);
        for at in [0, tail] {
            msg[at..at + 4].copy_from_slice(&idb);
            msg[at + 4..at + 8].copy_from_slice(&seq.to_le_bytes());
        }
        s.send(&msg).map_err(|e| format!("send: {e}"))?;
        sent += 1;
        loop {
            match s.recv(&mut buf) {
                Ok(n) if n == o.size && buf[..n] == msg[..] => break,
                Ok(n) => {
                    // A late echo of one of this thread's earlier datagrams: skip it.
                    let old = u32::from_le_bytes(buf[4..8].try_into().unwrap());
                    if n == o.size && buf[..4] == idb && old < seq && buf[tail..n] == buf[..8] {
                        continue;
                    }
                    return Err(format!("UDP echo mismatch ({n} bytes)"));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    lost += 1;
                    continue 'send;
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        let t1 = Instant::now();
        if t1 >= w.start && t1 <= w.end {
            lat.push((t1 - t0).as_nanos() as u64);
        }
    }
    Ok(Done { lat, sent, lost })
}

/// Adler-32 (zlib's), continued from `adler` (1 to start), as Python's zlib.adler32(data, adler).
fn adler32(adler: u32, data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (adler & 0xffff, adler >> 16);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

const BLOCK: usize = 1 << 20;

/// Block `i` of a bulk transfer: a fixed pattern with the block index in its head and tail.
fn bulk_block(base: &mut [u8], i: u64) {
    let n = base.len();
    base[..8].copy_from_slice(&i.to_le_bytes());
    base[n - 8..].copy_from_slice(&(!i).to_le_bytes());
}

/// One bulk transfer of `total` bytes; returns the server's reply line (checked).
fn bulk_transfer(o: &Opts, total: u64) -> Result<String, String> {
    let mut base: Vec<u8> = (0..BLOCK).map(|i| (i * 131 + (i >> 9)) as u8).collect();
    // The expected checksum, computed before the transfer (the client's CPU in the transfer is
    // then only the writes).
    let mut sum = 1u32;
    let (mut left, mut i) = (total, 0u64);
    while left > 0 {
        let k = left.min(BLOCK as u64) as usize;
        bulk_block(&mut base[..k.max(16)], i);
        sum = adler32(sum, &base[..k]);
        left -= k as u64;
        i += 1;
    }
    let mut s = connect(&o.target)?;
    let (mut left, mut i) = (total, 0u64);
    while left > 0 {
        let k = left.min(BLOCK as u64) as usize;
        bulk_block(&mut base[..k.max(16)], i);
        s.write_all(&base[..k]).map_err(|e| format!("write: {e}"))?;
        left -= k as u64;
        i += 1;
    }
    s.shutdown_write().map_err(|e| format!("shutdown: {e}"))?;
    // The reply is one line; the server's close after it is not waited for.
    let (mut reply, mut b) = (Vec::new(), [0u8; 512]);
    while !reply.contains(&b'\n') {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&b[..n]),
            Err(e) => return Err(format!("reading the server's reply: {e}")),
        }
    }
    let reply = String::from_utf8_lossy(&reply).trim().to_string();
    let mut f = reply.split_whitespace();
    let (got_n, got_sum) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    if got_n != total.to_string() {
        return Err(format!("bulk: sent {total} bytes, server received {got_n:?} ({reply:?})"));
    }
    if got_sum != sum.to_string() {
        return Err(format!("bulk: adler32 mismatch: sent {sum}, server {got_sum}"));
    }
    Ok(reply)
}

fn main_bulk(o: &Opts, total: u64) {
    if total < 16 {
        fail("--bulk needs at least 16 bytes");
    }
    if let Err(e) = bulk_transfer(o, (total / 16).max(16)) {
        fail(&format!("warm-up: {e}"));
    }
    let pid = o.server_pid.map(|p| p.to_string());
    let (srv0, cli0, t0) = (pid.as_deref().and_then(proc_cpu), proc_cpu("self"), Instant::now());
    let reply = bulk_transfer(o, total).unwrap_or_else(|e| fail(&e));
    let secs = t0.elapsed().as_secs_f64();
    let (srv1, cli1) = (pid.as_deref().and_then(proc_cpu), proc_cpu("self"));
    let mut out = format!(
        "{{\"ok\": true, \"mode\": \"bulk\", \"bytes\": {total}, \"seconds\": {secs:.4}, \
         \"mib_per_s\": {:.2}, \"server_reply\": {reply:?}",
        total as f64 / (1 << 20) as f64 / secs
    );
    if let (Some(a), Some(b)) = (srv0, srv1) {
        out += &format!(", \"server_cpu_s\": {:.2}, \"server_busy\": {:.3}", b - a, (b - a) / secs);
    } else if o.server_pid.is_some() {
        fail("cannot read the server's /proc/PID/stat (did it exit?)");
    }
    if let (Some(a), Some(b)) = (cli0, cli1) {
        out += &format!(", \"client_cpu_s\": {:.2}, \"client_busy\": {:.3}", b - a, (b - a) / secs);
    }
    println!("{out}}}");
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
        mode: Mode::Echo,
    };
    let mut have_target = false;
    while let Some(k) = a.next() {
        if k == "--churn" {
            o.mode = Mode::Churn;
            continue;
        }
        let v = a.next().unwrap_or_else(|| fail(&format!("{k} needs a value")));
        let num = |v: &str| v.parse::<f64>().unwrap_or_else(|_| fail(&format!("bad {k}: {v}")));
        match k.as_str() {
            "--tcp" => (o.target, have_target) = (Target::Tcp(v), true),
            "--unix" => (o.target, have_target) = (Target::Unix(v), true),
            "--udp" => (o.target, have_target, o.mode) = (Target::Udp(v), true, Mode::Udp),
            "--bulk" => o.mode = Mode::Bulk(num(&v) as u64),
            "--conns" => o.conns = num(&v) as usize,
            "--size" => o.size = num(&v) as usize,
            "--warmup" => o.warmup = num(&v),
            "--duration" => o.duration = num(&v),
            "--server-pid" => o.server_pid = Some(num(&v) as u32),
            _ => fail(&format!(
                "unknown option {k}; usage: loadgen --tcp HOST:PORT|--unix PATH|--udp HOST:PORT \
                 [--churn | --bulk BYTES] [--conns N] [--size BYTES] [--warmup S] \
                 [--duration S] [--server-pid PID]"
            )),
        }
    }
    if !have_target || o.conns == 0 || o.size == 0 || o.duration <= 0.0 {
        fail("need --tcp or --unix, and positive --conns, --size, --duration");
    }
    if o.mode == Mode::Churn && !matches!(o.target, Target::Tcp(_)) {
        fail("--churn needs --tcp");
    }
    o
}

fn main() {
    let o = Arc::new(parse());
    if let Mode::Bulk(total) = o.mode {
        main_bulk(&o, total);
        return;
    }
    let ready = Arc::new(Barrier::new(o.conns + 1));
    let go = Arc::new(Barrier::new(o.conns + 1));
    let win = Arc::new(OnceLock::new());
    let handles: Vec<_> = (0..o.conns)
        .map(|id| {
            let (o, ready, go, win) = (o.clone(), ready.clone(), go.clone(), win.clone());
            thread::spawn(move || worker(&o, id, &ready, &go, &win))
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

    let (mut lat, mut sent, mut lost) = (Vec::new(), 0u64, 0u64);
    for h in handles {
        match h.join() {
            Ok(Ok(d)) => {
                lat.extend(d.lat);
                sent += d.sent;
                lost += d.lost;
            }
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
            Target::Udp(a) => format!("udp:{a}"),
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
    out += &format!(
        ", \"mode\": {:?}",
        match o.mode {
            Mode::Echo => "echo",
            Mode::Churn => "churn",
            Mode::Udp => "udp",
            Mode::Bulk(_) => "bulk",
        }
    );
    if o.mode == Mode::Udp {
        out += &format!(", \"udp_sent\": {sent}, \"udp_lost\": {lost}");
    }
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
