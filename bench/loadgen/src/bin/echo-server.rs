//! The ceiling of the echo benchmarks: a pure-Rust echo server (no Python, no event-loop library).
//!
//!     echo-server --port 0              # TCP on 127.0.0.1; prints "READY <port>" once listening
//!     echo-server --unix /tmp/e.sock    # Unix stream socket; prints "READY <path>"
//!     echo-server --threads --port 0    # one blocking thread per connection instead
//!     echo-server --udp 0               # UDP echo on 127.0.0.1 (one thread, epoll)
//!
//! Default: one thread, level-triggered epoll, non-blocking sockets; on readiness it reads once
//! (64 KiB, like the Python servers) and writes what it read back, keeping an unsent rest and
//! waiting for EPOLLOUT (and not reading) until it is sent: what an event loop does with zero
//! overhead of its own, i.e. the floor of server CPU per request. `--threads` is the other classic
//! design: the kernel's scheduler is the event loop (a context switch per message).
//! `--udp`: level-triggered epoll on one non-blocking socket; on readiness every queued datagram
//! is received and sent back (`recv_from` until EAGAIN), then back to `epoll_wait`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

const BUF: usize = 64 * 1024;

// The three epoll calls, straight from the C library std already links (no dependency).
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}
extern "C" {
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epfd: i32, events: *mut EpollEvent, maxevents: i32, timeout: i32) -> i32;
}
const EPOLLIN: u32 = 0x001;
const EPOLLOUT: u32 = 0x004;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_DEL: i32 = 2;
const EPOLL_CTL_MOD: i32 = 3;
const EPOLL_CLOEXEC: i32 = 0o2000000;

fn ctl(ep: RawFd, op: i32, fd: RawFd, events: u32, token: u64) {
    let mut ev = EpollEvent { events, data: token };
    // SAFETY: ep and fd are open descriptors owned by this process; ev outlives the call.
    let r = unsafe { epoll_ctl(ep, op, fd, &mut ev) };
    assert!(r == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
}

trait Sock: Read + Write + AsRawFd {}
impl Sock for TcpStream {}
impl Sock for UnixStream {}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<Box<dyn Sock>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let s = l.accept()?.0;
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Box::new(s)
            }
            Listener::Unix(l) => {
                let s = l.accept()?.0;
                s.set_nonblocking(true)?;
                Box::new(s)
            }
        })
    }
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

struct Conn {
    sock: Box<dyn Sock>,
    pending: Vec<u8>, // read but not yet written back
}

fn serve_epoll(l: Listener) -> ! {
    const LISTENER: u64 = u64::MAX;
    // SAFETY: plain syscall.
    let ep = unsafe { epoll_create1(EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
    ctl(ep, EPOLL_CTL_ADD, l.fd(), EPOLLIN, LISTENER);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; BUF];
    let mut events = [EpollEvent { events: 0, data: 0 }; 256];
    loop {
        // SAFETY: events is a valid buffer of 256 entries.
        let n = unsafe { epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for ev in &events[..n as usize] {
            let (token, flags) = (ev.data, ev.events);
            if token == LISTENER {
                while let Ok(s) = l.accept() {
                    let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    ctl(ep, EPOLL_CTL_ADD, s.as_raw_fd(), EPOLLIN, slot as u64);
                    conns[slot] = Some(Conn { sock: s, pending: Vec::new() });
                }
                continue;
            }
            let slot = token as usize;
            let Some(c) = conns[slot].as_mut() else { continue };
            let fd = c.sock.as_raw_fd();
            let mut close = false;
            if flags & EPOLLOUT != 0 || !c.pending.is_empty() {
                match c.sock.write(&c.pending) {
                    Ok(k) => {
                        c.pending.drain(..k);
                        if c.pending.is_empty() {
                            ctl(ep, EPOLL_CTL_MOD, fd, EPOLLIN, token);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => close = true,
                }
            } else {
                match c.sock.read(&mut buf) {
                    Ok(0) => close = true,
                    Ok(k) => match c.sock.write(&buf[..k]) {
                        Ok(w) if w == k => {}
                        Ok(w) => {
                            c.pending.extend_from_slice(&buf[w..k]);
                            ctl(ep, EPOLL_CTL_MOD, fd, EPOLLOUT, token);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            c.pending.extend_from_slice(&buf[..k]);
                            ctl(ep, EPOLL_CTL_MOD, fd, EPOLLOUT, token);
                        }
                        Err(_) => close = true,
                    },
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => close = true,
                }
            }
            if close {
                ctl(ep, EPOLL_CTL_DEL, fd, 0, 0);
                conns[slot] = None; // drops (closes) the socket
            }
        }
    }
}

fn echo_blocking<S: Read + Write>(mut s: S) {
    let mut buf = vec![0u8; BUF];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn serve_threads(l: Listener) -> ! {
    loop {
        match &l {
            Listener::Tcp(t) => {
                if let Ok((s, _)) = t.accept() {
                    let _ = s.set_nodelay(true);
                    thread::spawn(move || echo_blocking(s));
                }
            }
            Listener::Unix(u) => {
                if let Ok((s, _)) = u.accept() {
                    thread::spawn(move || echo_blocking(s));
                }
            }
        }
    }
}

fn serve_udp(port: u16) -> ! {
    let s = UdpSocket::bind(("127.0.0.1", port)).expect("bind");
    s.set_nonblocking(true).expect("O_NONBLOCK");
    println!("READY {}", s.local_addr().unwrap().port());
    // SAFETY: plain syscall.
    let ep = unsafe { epoll_create1(EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
    ctl(ep, EPOLL_CTL_ADD, s.as_raw_fd(), EPOLLIN, 0);
    let mut buf = vec![0u8; BUF];
    let mut events = [EpollEvent { events: 0, data: 0 }; 1];
    loop {
        // SAFETY: events is a valid buffer of 1 entry.
        if unsafe { epoll_wait(ep, events.as_mut_ptr(), 1, -1) } < 1 {
            continue; // EINTR
        }
        // Every datagram queued, then back to epoll (an event loop's batching).
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], peer);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: echo-server [--threads] --port P | --unix PATH | --udp P");
    std::process::exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let threads = args.first().is_some_and(|a| a == "--threads");
    if threads {
        args.remove(0);
    }
    let l = match (args.first().map(String::as_str), args.get(1)) {
        (Some("--port"), Some(p)) => {
            let port = p.parse::<u16>().unwrap_or_else(|_| usage());
            let l = TcpListener::bind(("127.0.0.1", port)).expect("bind");
            println!("READY {}", l.local_addr().unwrap().port());
            Listener::Tcp(l)
        }
        (Some("--udp"), Some(p)) => serve_udp(p.parse::<u16>().unwrap_or_else(|_| usage())),
        (Some("--unix"), Some(path)) => {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).expect("bind");
            println!("READY {path}");
            Listener::Unix(l)
        }
        _ => usage(),
    };
    if threads {
        serve_threads(l)
    } else {
        match &l {
            Listener::Tcp(t) => t.set_nonblocking(true).expect("O_NONBLOCK"),
            Listener::Unix(u) => u.set_nonblocking(true).expect("O_NONBLOCK"),
        }
        serve_epoll(l)
    }
}
