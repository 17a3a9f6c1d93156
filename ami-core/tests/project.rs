//! Runs the boot-time script `/etc/prep-instance` with `sh` against a fake
//! EC2 instance metadata service on loopback, in a temporary root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use ami_core::configure::project::prep_instance_script;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test@ami";
const TOKEN: &str = "tok-0123456789";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// IMDSv2 required: a GET without a token gets 401.
    Required,
    /// IMDSv1 only: the token PUT is refused.
    V1Only,
    /// Tokens work, but the instance has no key pair (404).
    NoKey,
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
    ttl: Option<String>,
}

struct Imds {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn handle(mut s: TcpStream, mode: Mode, seen: &Mutex<Vec<Seen>>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut token, mut ttl, mut len) = (None, None, 0usize);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        let value = value.trim().to_string();
        match name.to_ascii_lowercase().as_str() {
            "x-aws-ec2-metadata-token" => token = Some(value),
            "x-aws-ec2-metadata-token-ttl-seconds" => ttl = Some(value),
            "content-length" => len = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        token: token.clone(),
        ttl: ttl.clone(),
    });
    let (status, text): (&str, String) = match (method.as_str(), path.as_str()) {
        ("PUT", "/latest/api/token") => match (mode, ttl) {
            (Mode::V1Only, _) => ("403 Forbidden", String::new()),
            (_, Some(_)) => ("200 OK", TOKEN.into()),
            (_, None) => ("400 Bad Request", String::new()),
        },
        ("GET", "/latest/meta-data/public-keys/0/openssh-key") => {
            let good = token.as_deref() == Some(TOKEN);
            match mode {
                Mode::NoKey => ("404 Not Found", String::new()),
                Mode::Required if !good => ("401 Unauthorized", String::new()),
                _ => ("200 OK", format!("{KEY}\n")),
            }
        }
        _ => ("404 Not Found", String::new()),
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn imds(mode: Mode) -> Imds {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            handle(c, mode, &s2);
        }
    });
    Imds { port, seen }
}

fn require_tools() {
    for tool in ["sh", "wget", "ssh-keygen"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "{tool} is required for this test (install it)");
    }
}

/// A root with `/etc/passwd` naming `admin` with our own uid and gid (so
/// the script's chown works unprivileged) and `/etc/ssh`.
fn fake_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let md = std::fs::metadata(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("etc/ssh")).unwrap();
    std::fs::create_dir_all(dir.path().join("home/admin")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\nadmin:x:{}:{}::/home/admin:/bin/bash\n",
            md.uid(),
            md.gid()
        ),
    )
    .unwrap();
    let script = dir.path().join("prep-instance");
    std::fs::write(&script, prep_instance_script("admin")).unwrap();
    dir
}

fn run(root: &Path, imds_url: &str, tries: u32) -> Output {
    Command::new("sh")
        .arg(root.join("prep-instance"))
        .env("PREP_ROOT", root)
        .env("PREP_IMDS", imds_url)
        .env("PREP_TRIES", tries.to_string())
        .env("PREP_DELAY", "0")
        .output()
        .unwrap()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn imdsv2_key_installed_idempotently_with_host_keys() {
    require_tools();
    let server = imds(Mode::Required);
    let root = fake_root();
    let url = format!("http://127.0.0.1:{}", server.port);
    let out = run(root.path(), &url, 3);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("generated missing SSH host keys"), "{log}");
    assert!(log.contains("1 new key(s) for admin (via IMDSv2)"), "{log}");
    for t in ["rsa", "ecdsa", "ed25519"] {
        let k = root.path().join(format!("etc/ssh/ssh_host_{t}_key"));
        assert!(k.exists(), "{t} host key missing");
    }
    let ak = root.path().join("home/admin/.ssh/authorized_keys");
    assert_eq!(std::fs::read_to_string(&ak).unwrap(), format!("{KEY}\n"));
    assert_eq!(mode_of(&ak), 0o600);
    assert_eq!(mode_of(&root.path().join("home/admin/.ssh")), 0o700);
    // The key was fetched with the token, the token with a TTL header.
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen[0].method, "PUT");
    assert!(seen[0].ttl.is_some());
    let get = seen.iter().find(|s| s.method == "GET").unwrap();
    assert_eq!(get.token.as_deref(), Some(TOKEN));

    // Second boot: same host keys, still exactly one key line.
    let host_key = std::fs::read(root.path().join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    let out = run(root.path(), &url, 3);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("generated"), "{log}");
    assert!(log.contains("0 new key(s)"), "{log}");
    assert_eq!(std::fs::read_to_string(&ak).unwrap(), format!("{KEY}\n"));
    assert_eq!(
        std::fs::read(root.path().join("etc/ssh/ssh_host_ed25519_key")).unwrap(),
        host_key
    );
}

#[test]
fn falls_back_to_imdsv1_and_keeps_other_keys() {
    require_tools();
    let server = imds(Mode::V1Only);
    let root = fake_root();
    let ssh = root.path().join("home/admin/.ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::write(ssh.join("authorized_keys"), "ssh-rsa AAAA other@host\n").unwrap();
    let out = run(root.path(), &format!("http://127.0.0.1:{}", server.port), 3);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("via IMDSv1"), "{log}");
    assert_eq!(
        std::fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
        format!("ssh-rsa AAAA other@host\n{KEY}\n")
    );
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|s| s.method == "GET" && s.token.is_none()));
}

#[test]
fn no_key_pair_is_not_retried_and_not_an_error() {
    require_tools();
    let server = imds(Mode::NoKey);
    let root = fake_root();
    let out = run(root.path(), &format!("http://127.0.0.1:{}", server.port), 5);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("no public key"), "{log}");
    assert!(!root.path().join("home/admin/.ssh/authorized_keys").exists());
    // One try: token, GET with token, then the IMDSv1 GET.
    assert_eq!(server.seen.lock().unwrap().len(), 3);
}

#[test]
fn unreachable_service_retries_then_fails() {
    require_tools();
    // A port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let root = fake_root();
    let out = run(root.path(), &format!("http://127.0.0.1:{port}"), 2);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("after 2 tries"), "{log}");
    assert!(!root.path().join("home/admin/.ssh/authorized_keys").exists());
}
