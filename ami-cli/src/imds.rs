//! A fake EC2 instance metadata service (IMDS) for `ami boot-test`.
//!
//! [`ImdsServer`] answers HTTP on a loopback port the way
//! 169.254.169.254 does on an instance: IMDSv2 session tokens (`PUT
//! /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`), token
//! checks on every GET (an absent token is refused with 401 when tokens are
//! [`TokenPolicy::Required`], like `HttpTokens=required`), and the handful of
//! metadata paths an image needs to come up: the SSH public key, the
//! instance id, the placement, the instance identity document. Every
//! request is recorded ([`ImdsServer::log`]) so a test can assert how the
//! guest fetched its key.
//!
//! QEMU reaches it through `guestfwd=...-cmd:`: QEMU starts a command per
//! guest connection with the connection on its stdin and stdout, and
//! [`relay`] (the hidden `ami imds-relay ADDR` command) copies bytes
//! between that and the server, so one server sees every connection and
//! keeps one log.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::json::JsonObject;

/// Header carrying the token's lifetime on `PUT /latest/api/token`.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Header carrying the session token on GETs.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Longest token lifetime IMDS grants, in seconds (6 hours).
pub const MAX_TTL: u64 = 21_600;
/// The path of the first public key, the one `ami boot-test` checks.
pub const OPENSSH_KEY_PATH: &str = "/latest/meta-data/public-keys/0/openssh-key";

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and discarded).
const MAX_BODY: u64 = 64 * 1024;

/// Whether GETs need an IMDSv2 session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenPolicy {
    /// A GET without a valid token gets 401 (`HttpTokens=required`).
    Required,
    /// GETs without a token are answered too (IMDSv1); a GET with an
    /// invalid token still gets 401, as on EC2.
    Optional,
}

impl TokenPolicy {
    /// `required` or `optional`.
    pub fn name(self) -> &'static str {
        match self {
            TokenPolicy::Required => "required",
            TokenPolicy::Optional => "optional",
        }
    }
}

/// What the metadata service tells the guest.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// `instance-id`.
    pub instance_id: String,
    /// `ami-id`.
    pub ami_id: String,
    /// `instance-type`.
    pub instance_type: String,
    /// `local-ipv4` (the address QEMU's DHCP gives the guest).
    pub local_ipv4: String,
    /// `mac` (the guest NIC's address).
    pub mac: String,
    /// `placement/region`.
    pub region: String,
    /// `placement/availability-zone`.
    pub availability_zone: String,
    /// Name of public key 0 (`public-keys/` lists `0=NAME`).
    pub key_name: String,
    /// `public-keys/0/openssh-key`: one OpenSSH public key line.
    pub openssh_key: String,
    /// `/latest/user-data`; `None` answers 404, as for an instance
    /// launched without user data.
    pub user_data: Option<String>,
}

impl Metadata {
    /// Metadata of a made-up `t3.micro` in us-east-1a whose key 0 is
    /// `openssh_key` (named `ami-boot-test`); the address and MAC match
    /// what `ami boot-test` configures QEMU with.
    pub fn new(openssh_key: &str) -> Self {
        Metadata {
            instance_id: "i-0123456789abcdef0".into(),
            ami_id: "ami-0123456789abcdef0".into(),
            instance_type: "t3.micro".into(),
            local_ipv4: "169.254.0.15".into(),
            mac: "52:54:00:12:34:56".into(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            key_name: "ami-boot-test".into(),
            openssh_key: openssh_key.trim().to_string(),
            user_data: None,
        }
    }

    /// `ip-A-B-C-D.ec2.internal`, the name EC2 gives such an address in
    /// us-east-1 (`REGION.compute.internal` elsewhere).
    pub fn hostname(&self) -> String {
        let domain = if self.region == "us-east-1" {
            "ec2.internal".to_string()
        } else {
            format!("{}.compute.internal", self.region)
        };
        format!("ip-{}.{domain}", self.local_ipv4.replace('.', "-"))
    }

    /// The instance identity document (a JSON object).
    pub fn identity_document(&self) -> String {
        let mut o = JsonObject::new();
        o.string("accountId", "123456789012");
        o.string("architecture", "x86_64");
        o.string("availabilityZone", &self.availability_zone);
        o.string("imageId", &self.ami_id);
        o.string("instanceId", &self.instance_id);
        o.string("instanceType", &self.instance_type);
        o.string("pendingTime", "2024-01-01T00:00:00Z");
        o.string("privateIp", &self.local_ipv4);
        o.string("region", &self.region);
        o.string("version", "2017-09-30");
        o.finish()
    }

    /// The body of a GET of `path` (query string removed), `None` for a
    /// path that does not exist. Directory listings end in `/` entries as
    /// on EC2; a directory answers with or without its trailing slash.
    pub fn get(&self, path: &str) -> Option<String> {
        let trimmed = path.trim_end_matches('/');
        let md = "/latest/meta-data";
        Some(match trimmed {
            "" => "latest".into(),
            "/latest" => {
                if self.user_data.is_some() {
                    "dynamic\nmeta-data\nuser-data".into()
                } else {
                    "dynamic\nmeta-data".into()
                }
            }
            "/latest/user-data" => return self.user_data.clone(),
            "/latest/dynamic" => "instance-identity/".into(),
            "/latest/dynamic/instance-identity" => "document".into(),
            "/latest/dynamic/instance-identity/document" => self.identity_document(),
            _ => {
                let rest = trimmed.strip_prefix(md)?;
                match rest {
                    "" => [
                        "ami-id",
                        "hostname",
                        "instance-id",
                        "instance-type",
                        "local-hostname",
                        "local-ipv4",
                        "mac",
                        "placement/",
                        "public-keys/",
                    ]
                    .join("\n"),
                    "/ami-id" => self.ami_id.clone(),
                    "/instance-id" => self.instance_id.clone(),
                    "/instance-type" => self.instance_type.clone(),
                    "/hostname" | "/local-hostname" => self.hostname(),
                    "/local-ipv4" => self.local_ipv4.clone(),
                    "/mac" => self.mac.clone(),
                    "/placement" => "availability-zone\nregion".into(),
                    "/placement/availability-zone" => self.availability_zone.clone(),
                    "/placement/region" => self.region.clone(),
                    "/public-keys" => format!("0={}", self.key_name),
                    "/public-keys/0" => "openssh-key".into(),
                    "/public-keys/0/openssh-key" => format!("{}\n", self.openssh_key),
                    _ => return None,
                }
            }
        })
    }
}

/// Whether and how a request carried a session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// No `X-aws-ec2-metadata-token` header.
    None,
    /// A token this server issued and that has not expired.
    Valid,
    /// A token header with an unknown or expired token.
    Invalid,
}

impl TokenUse {
    /// `none`, `valid` or `invalid`.
    pub fn name(self) -> &'static str {
        match self {
            TokenUse::None => "none",
            TokenUse::Valid => "valid",
            TokenUse::Invalid => "invalid",
        }
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Seconds since the server started.
    pub at: Duration,
    /// The HTTP method.
    pub method: String,
    /// The request target without its query string.
    pub path: String,
    /// The token the request carried (always `None` for the token PUT).
    pub token: TokenUse,
    /// The status code of the answer.
    pub status: u16,
}

impl RequestRecord {
    /// One JSON object (a line of the request log).
    pub fn to_json(&self) -> String {
        let mut o = JsonObject::new();
        o.float("at", self.at.as_secs_f64());
        o.string("method", &self.method);
        o.string("path", &self.path);
        o.string("token", self.token.name());
        o.number("status", self.status);
        o.finish()
    }
}

struct State {
    metadata: Metadata,
    policy: TokenPolicy,
    started: Instant,
    tokens: Mutex<HashMap<String, Instant>>,
    log: Mutex<Vec<RequestRecord>>,
}

/// A running fake IMDS on a loopback port; stopped by [`stop`](Self::stop)
/// or when dropped.
pub struct ImdsServer {
    addr: SocketAddr,
    state: Arc<State>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ImdsServer {
    /// Starts the server on `127.0.0.1` (a free port), one thread per
    /// connection.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start(metadata: Metadata, policy: TokenPolicy) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            metadata,
            policy,
            started: Instant::now(),
            tokens: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stopping = Arc::clone(&stopping);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || {
                        // A broken connection only affects that client.
                        let _ = serve_connection(&state, conn);
                    });
                }
            })
        };
        Ok(ImdsServer {
            addr,
            state,
            stopping,
            thread: Some(thread),
        })
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests answered so far, oldest first.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.state.log.lock().expect("IMDS log lock").clone()
    }

    /// Stops accepting connections and waits for the accepting thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stopping.store(true, Ordering::SeqCst);
            // Wake the blocking accept.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = thread.join();
        }
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A parsed request head.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (and skips its body); `None` at a clean end of
/// the connection, `Err` for garbage.
fn read_request<R: BufRead>(r: &mut R) -> io::Result<Option<Request>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = r.by_ref().take(MAX_HEAD as u64).read_line(&mut line)?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(bad("connection closed inside the request head"));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate blank lines between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed header"));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let request = Request {
        method: method.to_string(),
        path,
        headers,
    };
    if let Some(len) = request.header("content-length") {
        let len: u64 = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(bad("request body too large"));
        }
        io::copy(&mut r.by_ref().take(len), &mut io::sink())?;
    }
    Ok(Some(request))
}

/// An answer: status, extra headers, body.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

fn serve_connection(state: &State, conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    // One request per connection: answers carry `Connection: close`.
    let request = match read_request(&mut reader) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let response = Response::new(400, "Bad Request\n");
            write_response(&mut writer, &response, false)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let (response, token) = answer(state, &request);
    state
        .log
        .lock()
        .expect("IMDS log lock")
        .push(RequestRecord {
            at: state.started.elapsed(),
            method: request.method.clone(),
            path: request.path.clone(),
            token,
            status: response.status,
        });
    write_response(&mut writer, &response, request.method == "HEAD")?;
    let _ = writer.shutdown(Shutdown::Write);
    Ok(())
}

fn write_response<W: Write>(w: &mut W, response: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: EC2ws\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    w.write_all(out.as_bytes())?;
    w.flush()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn answer(state: &State, request: &Request) -> (Response, TokenUse) {
    match request.method.as_str() {
        "PUT" => {
            if request.path != "/latest/api/token" {
                return (Response::new(405, "Method Not Allowed\n"), TokenUse::None);
            }
            if request.header("x-forwarded-for").is_some() {
                return (Response::new(403, "Forbidden\n"), TokenUse::None);
            }
            let ttl = request
                .header(TTL_HEADER)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|t| (1..=MAX_TTL).contains(t));
            let Some(ttl) = ttl else {
                return (Response::new(400, "Bad Request\n"), TokenUse::None);
            };
            let token = new_token();
            state
                .tokens
                .lock()
                .expect("IMDS token lock")
                .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
            let mut response = Response::new(200, token);
            response
                .headers
                .push(("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()));
            (response, TokenUse::None)
        }
        "GET" | "HEAD" => {
            let token = match request.header(TOKEN_HEADER) {
                None => TokenUse::None,
                Some(t) => {
                    let tokens = state.tokens.lock().expect("IMDS token lock");
                    match tokens.get(t) {
                        Some(expiry) if *expiry > Instant::now() => TokenUse::Valid,
                        _ => TokenUse::Invalid,
                    }
                }
            };
            let allowed = match token {
                TokenUse::Valid => true,
                TokenUse::Invalid => false,
                TokenUse::None => state.policy == TokenPolicy::Optional,
            };
            if !allowed {
                return (Response::new(401, "Unauthorized\n"), token);
            }
            match state.metadata.get(&request.path) {
                Some(body) => (Response::new(200, body), token),
                None => (Response::new(404, "Not Found\n"), token),
            }
        }
        _ => {
            let mut response = Response::new(405, "Method Not Allowed\n");
            response.headers.push(("Allow", "GET, HEAD, PUT".into()));
            (response, TokenUse::None)
        }
    }
}

/// `ami imds-relay ADDR`: copies stdin to a TCP connection to `addr` and
/// the connection's answers to stdout, until the server closes it.
///
/// QEMU runs this per guest connection with the guest's socket as stdin,
/// stdout and stderr, so it writes nothing else anywhere: a failure just
/// ends the process, which closes the guest's connection.
pub fn relay(addr: &str) {
    let Ok(upstream) = TcpStream::connect(addr) else {
        return;
    };
    let Ok(mut to_server) = upstream.try_clone() else {
        return;
    };
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let _ = io::copy(&mut stdin, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let mut from_server = upstream;
    let mut stdout = io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from_server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // The stdin thread may still be blocked reading the guest's side;
    // exiting closes everything.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn send(addr: SocketAddr, raw: &str) -> Answer {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(raw.as_bytes()).unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let answer = Answer {
            status,
            headers,
            body: body.to_string(),
        };
        let len: usize = answer.header("content-length").unwrap().parse().unwrap();
        if !raw.starts_with("HEAD") {
            assert_eq!(len, answer.body.len(), "Content-Length matches the body");
        }
        answer
    }

    fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
        let token = token
            .map(|t| format!("X-aws-ec2-metadata-token: {t}\r\n"))
            .unwrap_or_default();
        send(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{token}\r\n"),
        )
    }

    fn put_token(addr: SocketAddr, ttl: Option<&str>) -> Answer {
        let ttl = ttl
            .map(|t| format!("X-aws-ec2-metadata-token-ttl-seconds: {t}\r\n"))
            .unwrap_or_default();
        send(
            addr,
            &format!(
                "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n{ttl}Content-Length: 0\r\n\r\n"
            ),
        )
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummyDummyDummyDummyDummyDummyDummyDummy test";

    #[test]
    fn token_put_validates_the_ttl_and_echoes_it() {
        let server = ImdsServer::start(Metadata::new(KEY), TokenPolicy::Required).unwrap();
        let addr = server.addr();
        for bad in [None, Some("0"), Some("21601"), Some("-5"), Some("abc")] {
            let a = put_token(addr, bad);
            assert_eq!(a.status, 400, "TTL {bad:?}");
        }
        let a = put_token(addr, Some("21600"));
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("x-aws-ec2-metadata-token-ttl-seconds"),
            Some("21600")
        );
        assert_eq!(a.body.len(), 64);
        let b = put_token(addr, Some("1"));
        assert_eq!(b.status, 200);
        assert_ne!(a.body, b.body, "tokens differ");
        // Through a proxy: refused, as on EC2.
        let c = send(
            addr,
            "PUT /latest/api/token HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
        );
        assert_eq!(c.status, 403);
        // PUT elsewhere and other methods.
        let d = send(addr, "PUT /latest/meta-data/ HTTP/1.1\r\n\r\n");
        assert_eq!(d.status, 405);
        let e = send(addr, "DELETE /latest/api/token HTTP/1.1\r\n\r\n");
        assert_eq!(e.status, 405);
    }

    #[test]
    fn required_mode_refuses_gets_without_a_valid_token() {
        let server = ImdsServer::start(Metadata::new(KEY), TokenPolicy::Required).unwrap();
        let addr = server.addr();
        assert_eq!(get(addr, OPENSSH_KEY_PATH, None).status, 401);
        assert_eq!(get(addr, OPENSSH_KEY_PATH, Some("0badc0de")).status, 401);
        let token = put_token(addr, Some("300")).body;
        let a = get(addr, OPENSSH_KEY_PATH, Some(&token));
        assert_eq!(a.status, 200);
        assert_eq!(a.body, format!("{KEY}\n"));
        // An expired token is refused.
        let short = put_token(addr, Some("1")).body;
        assert_eq!(get(addr, "/latest/meta-data/", Some(&short)).status, 200);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(get(addr, "/latest/meta-data/", Some(&short)).status, 401);
    }

    #[test]
    fn optional_mode_answers_imdsv1_but_not_bad_tokens() {
        let server = ImdsServer::start(Metadata::new(KEY), TokenPolicy::Optional).unwrap();
        let addr = server.addr();
        let a = get(addr, OPENSSH_KEY_PATH, None);
        assert_eq!(a.status, 200);
        assert_eq!(a.body.trim_end(), KEY);
        assert_eq!(get(addr, OPENSSH_KEY_PATH, Some("nope")).status, 401);
        let head = send(addr, "HEAD /latest/meta-data/instance-id HTTP/1.0\r\n\r\n");
        assert_eq!(head.status, 200);
        assert_eq!(head.body, "");
        assert_eq!(head.header("content-length"), Some("19"));
    }

    #[test]
    fn serves_the_metadata_tree() {
        let server = ImdsServer::start(Metadata::new(KEY), TokenPolicy::Required).unwrap();
        let addr = server.addr();
        let token = put_token(addr, Some("60")).body;
        let t = Some(token.as_str());
        let listing = get(addr, "/latest/meta-data/", t).body;
        for entry in [
            "ami-id",
            "instance-id",
            "public-keys/",
            "placement/",
            "local-ipv4",
        ] {
            assert!(listing.lines().any(|l| l == entry), "{entry} in {listing}");
        }
        assert_eq!(get(addr, "/latest/meta-data", t).body, listing);
        assert_eq!(
            get(addr, "/latest/meta-data/public-keys/", t).body,
            "0=ami-boot-test"
        );
        assert_eq!(
            get(addr, "/latest/meta-data/public-keys/0/", t).body,
            "openssh-key"
        );
        assert_eq!(
            get(addr, "/latest/meta-data/instance-id", t).body,
            "i-0123456789abcdef0"
        );
        assert_eq!(
            get(addr, "/latest/meta-data/local-ipv4", t).body,
            "169.254.0.15"
        );
        assert_eq!(
            get(addr, "/latest/meta-data/hostname", t).body,
            "ip-169-254-0-15.ec2.internal"
        );
        assert_eq!(
            get(addr, "/latest/meta-data/placement/region?x=1", t).body,
            "us-east-1"
        );
        assert_eq!(
            get(addr, "/latest/meta-data/placement/availability-zone", t).body,
            "us-east-1a"
        );
        assert_eq!(get(addr, "/latest/user-data", t).status, 404);
        assert_eq!(get(addr, "/latest/meta-data/nothing", t).status, 404);
        let doc = get(addr, "/latest/dynamic/instance-identity/document", t).body;
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
        assert_eq!(doc["region"], "us-east-1");
        assert_eq!(send(addr, "garbage\r\n\r\n").status, 400);
    }

    #[test]
    fn logs_every_request_with_its_token_use() {
        let server = ImdsServer::start(Metadata::new(KEY), TokenPolicy::Required).unwrap();
        let addr = server.addr();
        get(addr, OPENSSH_KEY_PATH, None);
        let token = put_token(addr, Some("60")).body;
        get(addr, OPENSSH_KEY_PATH, Some(&token));
        get(addr, "/latest/meta-data/mac", Some("forged"));
        let log = server.log();
        let summary: Vec<(&str, &str, TokenUse, u16)> = log
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.token, r.status))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("GET", OPENSSH_KEY_PATH, TokenUse::None, 401),
                ("PUT", "/latest/api/token", TokenUse::None, 200),
                ("GET", OPENSSH_KEY_PATH, TokenUse::Valid, 200),
                ("GET", "/latest/meta-data/mac", TokenUse::Invalid, 401),
            ]
        );
        let line: serde_json::Value = serde_json::from_str(&log[2].to_json()).unwrap();
        assert_eq!(line["token"], "valid");
        assert_eq!(line["status"], 200);
        assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
        server.stop();
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .map(|mut c| {
                    let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    let mut s = String::new();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    c.read_to_string(&mut s).map(|_| s).unwrap_or_default()
                })
                .unwrap_or_default()
                .is_empty(),
            "a stopped server answers nothing"
        );
    }
}
