//! The `/proc` parsers and the probe's decisions, on captured text.

use super::*;

#[test]
fn syscall_lines() {
    // tokio blocked in accept4 on fd 3 (captured from a real server).
    let line =
        "288 0x3 0x7ffd5aa4d168 0x7ffd5aa4d164 0x80800 0x0 0x0 0x7ffd5aa4d0f8 0x7f3c1a2b3c4d\n";
    let call = parse_syscall(line).unwrap();
    assert_eq!(call.nr, 288);
    assert_eq!(call.args[0], 3);
    assert_eq!(call.args[3], 0x80800);
    assert_eq!(parse_syscall("running\n"), None);
    assert_eq!(parse_syscall("-1 0x7ffd5aa4d0f8 0x7f3c1a2b3c4d\n"), None);
    assert_eq!(parse_syscall("232 0x5 0x55cc52cfcf40\n"), None, "truncated");
    assert_eq!(parse_syscall(""), None);
}

#[test]
fn socket_links() {
    assert_eq!(parse_socket_link("socket:[156901]"), Some(156901));
    assert_eq!(parse_socket_link("anon_inode:[eventpoll]"), None);
    assert_eq!(parse_socket_link("/dev/null"), None);
    assert_eq!(parse_socket_link("socket:[x]"), None);
}

#[test]
fn stat_process_group() {
    let stat = "22158 (axum-listenfd) S 22150 22158 22150 0 -1 4194560 613 0 0 0";
    assert_eq!(parse_stat_pgrp(stat), Some(22158));
    // A command name with spaces and parentheses.
    let odd = "7 (a) b (c) S 1 42 1 0";
    assert_eq!(parse_stat_pgrp(odd), Some(42));
    assert_eq!(parse_stat_pgrp("7 (truncated"), None);
}

/// The parsers read text the kernel writes, but must not panic on
/// anything: random bytes and mangled real lines, from a seeded
/// generator (the seed is in the failure message).
#[test]
fn parsers_never_panic_on_arbitrary_input() {
    let samples = [
        "tfd:        3 events:       19 data:                3  pos:0 ino:26c2f sdev:9\n",
        "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 157002 1\n",
        "288 0x3 0x7ffd 0x80800 0x0 0x0 0x0 0x7ffd 0x7f\n",
        "42 (a) b)) S 1 42 42 0 -1\n",
        "pos:\t0\nflags:\t02004002\n",
    ];
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for round in 0..20_000u32 {
        let mut bytes: Vec<u8> = samples[round as usize % samples.len()].bytes().collect();
        for _ in 0..(next() % 8) {
            let at = (next() as usize) % (bytes.len() + 1);
            match next() % 3 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, (next() % 256) as u8),
                _ => {
                    let pick = b" :()x0\n\t-";
                    bytes.insert(at, pick[(next() % pick.len() as u64) as usize])
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_syscall(&text);
        let _ = parse_socket_link(&text);
        let _ = parse_stat_pgrp(&text);
        let _ = parse_fdinfo_flags(&text);
        let _ = parse_epoll_fdinfo(&text);
        let _ = parse_net_tcp(&text);
        let _ = parse_pollfds(&bytes);
        let fd = (next() % 2048) as i32 - 8;
        let _ = fd_set_contains(&bytes, fd);
    }
}

#[test]
fn net_tcp_tables() {
    let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 156901 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 157002 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:1F90 0100007F:D2F2 06 00000000:00000000 03:00000F3C 00000000     0        0 0 3 0000000000000000\n\
   3: garbage\n";
    assert_eq!(
        parse_net_tcp(text),
        [
            TcpEntry {
                local_port: 8080,
                listening: true,
                inode: 156901
            },
            TcpEntry {
                local_port: 8080,
                listening: false,
                inode: 157002
            },
            TcpEntry {
                local_port: 8080,
                listening: false,
                inode: 0
            },
        ]
    );
    let v6 = "header\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 42 1\n";
    assert_eq!(
        parse_net_tcp(v6),
        [TcpEntry {
            local_port: 80,
            listening: true,
            inode: 42
        }]
    );
}

#[test]
fn fdinfo_flags() {
    let blocking = "pos:\t0\nflags:\t02000002\nmnt_id:\t10\nino:\t156901\n";
    assert_eq!(parse_fdinfo_flags(blocking), Some(0o2000002));
    assert_eq!(parse_fdinfo_flags(blocking).unwrap() & O_NONBLOCK, 0);
    let nonblocking = "pos:\t0\nflags:\t02004002\nmnt_id:\t10\n";
    assert_ne!(parse_fdinfo_flags(nonblocking).unwrap() & O_NONBLOCK, 0);
    assert_eq!(parse_fdinfo_flags("pos:\t0\n"), None);
}

#[test]
fn epoll_interest_lists() {
    let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
                    tfd:        3 events:       19 data:                3  pos:0 ino:26c2f sdev:9\n\
                    tfd:       10 events: 8000201d data:                a  pos:0 ino:26c35 sdev:9\n";
    assert_eq!(
        parse_epoll_fdinfo(info),
        [
            EpollTarget {
                tfd: 3,
                file: Some((0x26c2f, 9))
            },
            EpollTarget {
                tfd: 10,
                file: Some((0x26c35, 9))
            },
        ]
    );
    // Older kernels print no ino/sdev.
    let old = "tfd:        4 events:       19 data:                4\n";
    assert_eq!(
        parse_epoll_fdinfo(old),
        [EpollTarget { tfd: 4, file: None }]
    );
    assert!(parse_epoll_fdinfo("eventfd-count: 0\n").is_empty());
}

#[test]
fn pollfd_arrays_and_fd_sets() {
    let mut raw = Vec::new();
    for (fd, events) in [(3i32, 1i16), (-1, 1), (7, 1)] {
        raw.extend_from_slice(&fd.to_ne_bytes());
        raw.extend_from_slice(&events.to_ne_bytes());
        raw.extend_from_slice(&0i16.to_ne_bytes());
    }
    assert_eq!(parse_pollfds(&raw), [3, 7]);
    assert!(parse_pollfds(&raw[..7]).is_empty());

    // An fd_set with fds 3 and 70 set.
    let mut set = [0 as libc::c_ulong; 2];
    let bits = 8 * std::mem::size_of::<libc::c_ulong>();
    set[3 / bits] |= 1 << (3 % bits);
    set[70 / bits] |= 1 << (70 % bits);
    let raw: Vec<u8> = set.iter().flat_map(|w| w.to_ne_bytes()).collect();
    assert!(fd_set_contains(&raw, 3));
    assert!(fd_set_contains(&raw, 70));
    assert!(!fd_set_contains(&raw, 4));
    assert!(!fd_set_contains(&raw, 1000));
    assert!(!fd_set_contains(&raw, -1));
}

#[test]
fn trap_needs_a_blocking_accept_and_an_epoll_in_the_same_process() {
    let blocked = Wait::Blocked {
        pid: 10,
        tid: 10,
        syscall: "accept4",
        fd: 3,
        inode: 99,
        blocking: true,
    };
    let epoll = Wait::Epoll {
        pid: 10,
        epfd: 5,
        inode: 99,
    };
    let probe = Probe {
        waits: vec![epoll.clone(), blocked.clone()],
        unreadable: vec![],
    };
    assert!(probe.ready());
    assert_eq!(probe.event_loop_blocked_in_accept(), Some(&blocked));
    let advice = probe.trap_advice().unwrap();
    assert!(
        advice.contains("pid=10 is blocked in accept4 on fd 3"),
        "{advice}"
    );
    assert!(advice.contains("set_nonblocking(true)"), "{advice}");
    assert_eq!(probe.reason().unwrap(), "pid=10 has it in epoll fd 5");
    // A plain blocking accept loop (one thread, no event loop) is fine.
    let plain = Probe {
        waits: vec![blocked.clone()],
        unreadable: vec![],
    };
    assert_eq!(plain.blocking_accepts().count(), 1);
    assert_eq!(plain.event_loop_blocked_in_accept(), None);
    assert_eq!(plain.trap_advice(), None);
    // Epoll in another process does not count.
    let other = Probe {
        waits: vec![
            Wait::Epoll {
                pid: 11,
                epfd: 5,
                inode: 99,
            },
            blocked,
        ],
        unreadable: vec![],
    };
    assert_eq!(other.event_loop_blocked_in_accept(), None);
    assert!(!Probe::default().ready());
}
