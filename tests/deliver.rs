//! Delivery: the outbox writes each send exactly once, crashes included; the webhook posts
//! to a real HTTP server on 127.0.0.1, retries, and records every failure.

mod common;
use common::TempDir;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use moments::deliver::{
    deliver_pending, DeliverError, Deliverer, Outbox, RetryPolicy, Webhook, WebhookConfig,
};
use moments::outcome::{Group, Send};
use moments::state::StateStore;

// ---------------------------------------------------------------------------------------
// Helpers

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, hour, minute, 0).unwrap()
}

fn email(id: &str, group: Group) -> Send {
    Send {
        send_id: id.to_owned(),
        moment: "cart_reminder".into(),
        customer_id: format!("c-{id}").into(),
        channel: "email".to_owned(),
        group,
        trigger_at: at(9, 0),
        sent_at: at(10, 0),
        message: BTreeMap::from([
            ("subject".to_owned(), "Still thinking?".to_owned()),
            ("body".to_owned(), "Line one\nLine \"two\" ✓".to_owned()),
        ]),
    }
}

fn webhook_send(id: &str, url: &str) -> Send {
    Send {
        channel: "webhook".to_owned(),
        message: BTreeMap::from([
            ("url".to_owned(), url.to_owned()),
            ("body".to_owned(), r#"{"customer":"c-1"}"#.to_owned()),
        ]),
        ..email(id, Group::Treatment)
    }
}

fn store_with(dir: &TempDir, sends: &[Send]) -> StateStore {
    let mut store = StateStore::open(&dir.join("state.db")).unwrap();
    store.record_tick(at(10, 0), &[], sends).unwrap();
    store
}

fn outbox_lines(dir: &TempDir) -> Vec<Send> {
    let text = std::fs::read_to_string(dir.join("outbox.ndjson")).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn ids(sends: &[Send]) -> Vec<&str> {
    sends.iter().map(|s| s.send_id.as_str()).collect()
}

/// Fast pauses, the default waits between calls.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        first_pause: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

fn webhook(endpoint: Option<String>, policy: RetryPolicy) -> Deliverer {
    Deliverer::Webhook(Webhook::new(WebhookConfig {
        endpoint,
        timeout: Duration::from_secs(5),
        policy,
    }))
}

// ---------------------------------------------------------------------------------------
// Outbox

#[test]
fn a_backlog_larger_than_a_page_is_delivered_whole_in_order() {
    let dir = TempDir::new("outbox-backlog");
    // 25,000 sends at several instants: delivery reads them in pages of 10,000, and page
    // boundaries fall among sends of the same instant.
    let sends: Vec<Send> = (0..25_000)
        .map(|i| Send {
            sent_at: at(10, 0) + chrono::Duration::seconds(i / 7_000),
            ..email(&format!("s{i:05}"), Group::Treatment)
        })
        .collect();
    let mut store = store_with(&dir, &sends);
    let mut outbox = Deliverer::Outbox(Outbox::open(&dir.join("outbox.ndjson")).unwrap());
    let report = deliver_pending(&mut store, &mut outbox, at(11, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (25_000, 0));
    let written = outbox_lines(&dir);
    assert_eq!(ids(&written), ids(&sends));
    assert!(store.undelivered(at(11, 0)).unwrap().is_empty());
}

#[test]
fn the_outbox_writes_each_treatment_send_once() {
    let dir = TempDir::new("outbox-once");
    let sends = [
        email("b", Group::Treatment),
        email("a", Group::Treatment),
        email("ctl", Group::Control),
    ];
    let mut store = store_with(&dir, &sends);
    let mut outbox = Deliverer::Outbox(Outbox::open(&dir.join("outbox.ndjson")).unwrap());

    let report = deliver_pending(&mut store, &mut outbox, at(10, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (2, 0));
    assert_eq!(outbox_lines(&dir), [sends[1].clone(), sends[0].clone()]);

    let again = deliver_pending(&mut store, &mut outbox, at(10, 1)).unwrap();
    assert_eq!((again.delivered, again.failed), (0, 0));
    // A new tick, a new outbox value, the same process or another: still once.
    store.record_tick(at(10, 2), &[], &sends).unwrap();
    let mut reopened = Deliverer::Outbox(Outbox::open(&dir.join("outbox.ndjson")).unwrap());
    let third = deliver_pending(&mut store, &mut reopened, at(10, 2)).unwrap();
    assert_eq!(third.delivered, 0);
    assert_eq!(ids(&outbox_lines(&dir)), ["a", "b"]);
    let a = store.delivery("a").unwrap().unwrap();
    assert_eq!((a.delivered_at, a.attempts), (Some(at(10, 0)), 1));
    assert_eq!(store.delivery("ctl").unwrap().unwrap().delivered_at, None);
}

#[test]
fn a_crash_between_append_and_mark_does_not_write_twice() {
    let dir = TempDir::new("outbox-crash");
    let sends = [email("a", Group::Treatment), email("b", Group::Treatment)];
    let mut store = store_with(&dir, &sends);
    {
        // The first run appended `a`, then died before marking it.
        let mut outbox = Outbox::open(&dir.join("outbox.ndjson")).unwrap();
        outbox.append(&sends[0]).unwrap();
    }
    assert_eq!(ids(&store.undelivered(at(10, 0)).unwrap()), ["a", "b"]);

    let outbox = Outbox::open(&dir.join("outbox.ndjson")).unwrap();
    assert!(outbox.contains("a"));
    let mut outbox = Deliverer::Outbox(outbox);
    let report = deliver_pending(&mut store, &mut outbox, at(10, 5)).unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(ids(&outbox_lines(&dir)), ["a", "b"]);
    assert!(store.undelivered(at(11, 0)).unwrap().is_empty());
    assert_eq!(
        store.delivery("a").unwrap().unwrap().delivered_at,
        Some(at(10, 5))
    );
}

/// Delivers what is due at `now` through the outbox at `path` opened for `store`, as
/// `moments run` does; how many sends were delivered.
fn deliver_for(path: &Path, store: &mut StateStore, now: DateTime<Utc>) -> usize {
    let mut outbox = Deliverer::Outbox(Outbox::open_for(path, store).unwrap());
    deliver_pending(store, &mut outbox, now).unwrap().delivered
}

/// What a run that died before marking leaves: `sends` appended to the outbox at `path`.
fn appended_by_a_crashed_run(path: &Path, sends: &[Send]) {
    let mut outbox = Outbox::open(path).unwrap();
    for send in sends {
        outbox.append(send).unwrap();
    }
}

#[test]
fn opened_for_a_store_the_outbox_reads_only_what_followed_the_last_mark() {
    let dir = TempDir::new("outbox-mark");
    let path = dir.join("outbox.ndjson");
    let sends = [email("a", Group::Treatment), email("b", Group::Treatment)];
    let mut store = store_with(&dir, &sends[..1]);
    assert_eq!(deliver_for(&path, &mut store, at(10, 0)), 1);
    store.record_tick(at(10, 1), &[], &sends).unwrap();
    appended_by_a_crashed_run(&path, &sends[1..]);

    // Only the line after the mark is read: `a` is known delivered from the store.
    let outbox = Outbox::open_for(&path, &mut store).unwrap();
    assert!(outbox.contains("b") && !outbox.contains("a"));
    drop(outbox);
    assert_eq!(deliver_for(&path, &mut store, at(10, 2)), 1);
    assert_eq!(ids(&outbox_lines(&dir)), ["a", "b"]);
    assert!(store.undelivered(at(11, 0)).unwrap().is_empty());
}

#[test]
fn an_outbox_cut_short_in_place_is_read_whole_even_once_it_grows_past_the_mark() {
    let dir = TempDir::new("outbox-cut");
    let path = dir.join("outbox.ndjson");
    let sends = ["a", "b", "c", "d", "e"].map(|id| email(id, Group::Treatment));
    let mut store = store_with(&dir, &sends[..2]);
    assert_eq!(deliver_for(&path, &mut store, at(10, 0)), 2);
    // Emptied in place (same file) by its reader; a run opens it, then a later run
    // writes `c`, `d` and `e`, past the old mark (the length of two lines), and dies
    // before marking them.
    std::fs::write(&path, "").unwrap();
    drop(Outbox::open_for(&path, &mut store).unwrap());
    store.record_tick(at(10, 1), &[], &sends).unwrap();
    appended_by_a_crashed_run(&path, &sends[2..]);

    assert_eq!(deliver_for(&path, &mut store, at(10, 2)), 3);
    let written = ids(&outbox_lines(&dir)).join(" ");
    assert_eq!(written, "c d e", "a line written again");
}

#[test]
fn a_line_left_by_a_crash_keeps_the_mark_until_its_send_is_marked() {
    let dir = TempDir::new("outbox-leftover");
    let path = dir.join("outbox.ndjson");
    let early = email("a", Group::Treatment);
    let late = Send {
        sent_at: at(10, 30),
        ..email("z", Group::Treatment)
    };
    let mut store = store_with(&dir, &[early, late.clone()]);
    // A run up to 10:30 appended `z`, then died before marking it.
    appended_by_a_crashed_run(&path, &[late]);

    // A run up to 10:00 delivers `a` only: `z` is not due yet, so its line stays unmarked
    // and the mark must not move past it.
    assert_eq!(deliver_for(&path, &mut store, at(10, 0)), 1);
    assert!(Outbox::open_for(&path, &mut store).unwrap().contains("z"));
    assert_eq!(deliver_for(&path, &mut store, at(10, 30)), 1);
    assert_eq!(ids(&outbox_lines(&dir)), ["z", "a"], "`z` written once");
    assert!(store.undelivered(at(11, 0)).unwrap().is_empty());
}

#[test]
fn an_outbox_moved_away_and_replaced_is_read_whole() {
    let dir = TempDir::new("outbox-replaced");
    let path = dir.join("outbox.ndjson");
    let sends = ["a", "b", "c"].map(|id| email(id, Group::Treatment));
    let mut store = store_with(&dir, &sends[..2]);
    assert_eq!(deliver_for(&path, &mut store, at(10, 0)), 2);
    // The reader of the outbox moved it away; a later run wrote `c` to a new file, longer
    // than the mark, and died before marking it.
    std::fs::rename(&path, dir.join("outbox.1.ndjson")).unwrap();
    store.record_tick(at(10, 1), &[], &sends).unwrap();
    appended_by_a_crashed_run(
        &path,
        &[sends[2].clone(), sends[2].clone(), sends[2].clone()],
    );

    assert_eq!(deliver_for(&path, &mut store, at(10, 2)), 1);
    let written = ids(&outbox_lines(&dir)).join(" ");
    assert_eq!(written, "c c c", "`c` written again");
}

#[test]
fn a_torn_last_line_is_cut_off_and_written_again() {
    let dir = TempDir::new("outbox-torn");
    let sends = [email("a", Group::Treatment), email("b", Group::Treatment)];
    let mut store = store_with(&dir, &sends);
    // `a` made it; the crash came in the middle of writing `b`.
    let a = serde_json::to_string(&sends[0]).unwrap();
    let b = serde_json::to_string(&sends[1]).unwrap();
    let torn = format!("{a}\n{}", &b[..b.len() / 2]);
    std::fs::write(dir.join("outbox.ndjson"), &torn).unwrap();

    let outbox = Outbox::open(&dir.join("outbox.ndjson")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("outbox.ndjson")).unwrap(),
        format!("{a}\n")
    );
    assert!(outbox.contains("a") && !outbox.contains("b"));
    let mut outbox = Deliverer::Outbox(outbox);
    let report = deliver_pending(&mut store, &mut outbox, at(10, 0)).unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(outbox_lines(&dir), sends);
}

#[test]
fn a_torn_line_even_when_it_is_complete_json_is_cut_off() {
    let dir = TempDir::new("outbox-no-newline");
    let sends = [email("a", Group::Treatment)];
    let mut store = store_with(&dir, &sends);
    // Everything but the newline: not known to be complete, so written again.
    let a = serde_json::to_string(&sends[0]).unwrap();
    std::fs::write(dir.join("outbox.ndjson"), &a).unwrap();
    let mut outbox = Deliverer::Outbox(Outbox::open(&dir.join("outbox.ndjson")).unwrap());
    deliver_pending(&mut store, &mut outbox, at(10, 0)).unwrap();
    assert_eq!(outbox_lines(&dir), sends);
}

#[test]
fn an_outbox_with_a_line_that_is_not_a_send_is_refused() {
    let dir = TempDir::new("outbox-foreign");
    let a = serde_json::to_string(&email("a", Group::Treatment)).unwrap();
    std::fs::write(dir.join("outbox.ndjson"), format!("{a}\nhello\n")).unwrap();
    let error = Outbox::open(&dir.join("outbox.ndjson")).unwrap_err();
    assert!(matches!(error, DeliverError::Outbox { .. }));
    let message = error.to_string();
    assert!(
        message.contains("outbox.ndjson") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn the_outbox_creates_its_directory() {
    let dir = TempDir::new("outbox-dir");
    let path = dir.join("deep/er/outbox.ndjson");
    let outbox = Outbox::open(&path).unwrap();
    assert_eq!(outbox.path(), path);
    assert!(path.exists());
}

// ---------------------------------------------------------------------------------------
// A tiny HTTP server for the webhook tests

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A status to answer with, and header lines to add (each ending in CRLF).
type Answer = (u16, String);

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers each with the
/// next queued status (200 when none is queued), one request per connection. It stops
/// when dropped, or after a minute at the latest.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    statuses: Arc<Mutex<VecDeque<Answer>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        Server::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Server {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, statuses, stop) = (requests.clone(), statuses.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve(stream, &requests, &statuses);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Server {
            addr,
            requests,
            statuses,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues statuses for the next requests.
    fn answer(&self, statuses: &[u16]) {
        let answers = statuses.iter().map(|&status| (status, String::new()));
        self.statuses.lock().unwrap().extend(answers);
    }

    /// Queues a status with headers (`"Retry-After: 120"`) for the next request.
    fn answer_with(&self, status: u16, headers: &[&str]) {
        let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        self.statuses.lock().unwrap().push_back((status, headers));
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<Request>>,
    statuses: &Mutex<VecDeque<Answer>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    requests.lock().unwrap().push(Request {
        method,
        path,
        headers,
        body,
    });
    let (status, extra_headers) = statuses
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, String::new()));
    let text = if status < 300 {
        "ok"
    } else {
        "boom:\n  try later"
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Location: http://elsewhere.invalid/\r\n{extra_headers}Connection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

// ---------------------------------------------------------------------------------------
// Webhook

#[test]
fn the_webhook_posts_the_send_with_its_idempotency_key() {
    let server = Server::start();
    let dir = TempDir::new("webhook-post");
    let sends = [
        webhook_send("w1", &server.url("/own/hook")),
        email("e1", Group::Treatment),
        email("ctl", Group::Control),
    ];
    let mut store = store_with(&dir, &sends);
    let mut deliverer = webhook(Some(server.url("/endpoint")), fast_policy());

    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (2, 0), "{report:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    // In (sent_at, send_id) order: e1, then w1.
    for (request, send, path) in [
        (&requests[0], &sends[1], "/endpoint"),
        (&requests[1], &sends[0], "/own/hook"),
    ] {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, path);
        assert_eq!(
            request.header("Idempotency-Key"),
            Some(send.send_id.as_str())
        );
        assert_eq!(request.header("Content-Type"), Some("application/json"));
    }
    // To the endpoint: the whole send. To a webhook message's own url: its rendered body.
    let body: Send = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(&body, &sends[1]);
    assert_eq!(requests[1].body, br#"{"customer":"c-1"}"#.to_vec());
    assert!(store.undelivered(at(12, 0)).unwrap().is_empty());
    // Nothing is posted twice.
    let again = deliver_pending(&mut store, &mut deliverer, at(12, 0)).unwrap();
    assert_eq!(again.delivered, 0);
    assert_eq!(server.requests().len(), 2);
}

/// A partner webhook's `method` is used: PUT with the body, DELETE without one.
#[test]
fn a_webhook_message_uses_its_method() {
    let server = Server::start();
    let dir = TempDir::new("webhook-method");
    let mut put = webhook_send("w1", &server.url("/put"));
    put.message.insert("method".to_owned(), "put".to_owned());
    let mut delete = webhook_send("w2", &server.url("/delete"));
    delete
        .message
        .insert("method".to_owned(), "DELETE".to_owned());
    let mut store = store_with(&dir, &[put, delete]);
    let mut deliverer = webhook(None, fast_policy());
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (2, 0), "{report:?}");
    let requests = server.requests();
    let by_path = |p: &str| requests.iter().find(|r| r.path == p).unwrap();
    assert_eq!(by_path("/put").method, "PUT");
    assert_eq!(by_path("/put").body, br#"{"customer":"c-1"}"#.to_vec());
    assert_eq!(by_path("/delete").method, "DELETE");
    assert!(by_path("/delete").body.is_empty());
    assert_eq!(by_path("/delete").header("Idempotency-Key"), Some("w2"));
}

#[test]
fn a_500_is_retried_within_the_call_and_then_delivered() {
    let server = Server::start();
    server.answer(&[500, 503]);
    let dir = TempDir::new("webhook-500");
    let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/hook"))]);
    let mut deliverer = webhook(None, fast_policy());

    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|r| r.header("Idempotency-Key") == Some("w1") && r.body == requests[0].body));
    let delivery = store.delivery("w1").unwrap().unwrap();
    assert_eq!(delivery.delivered_at, Some(at(10, 0)));
}

#[test]
fn a_500_on_every_try_is_recorded_and_retried_on_a_later_call() {
    let server = Server::start();
    server.answer(&[500, 500, 500]);
    let dir = TempDir::new("webhook-500s");
    let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/hook"))]);
    let mut deliverer = webhook(None, fast_policy());

    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert!(report.errors[0].contains("HTTP 500"), "{:?}", report.errors);
    assert!(
        report.errors[0].contains("boom: try later"),
        "{:?}",
        report.errors
    );
    let delivery = store.delivery("w1").unwrap().unwrap();
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.next_attempt_at, Some(at(10, 1)));
    assert!(delivery.last_error.unwrap().contains("3 tries"));
    assert_eq!(store.attempt_log("w1").unwrap()[0].outcome, "failed");

    // Not before its time…
    let early = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((early.delivered, early.failed), (0, 0));
    assert_eq!(server.requests().len(), 3);
    // …then delivered.
    let later = deliver_pending(&mut store, &mut deliverer, at(10, 1)).unwrap();
    assert_eq!(later.delivered, 1);
    assert_eq!(server.requests().len(), 4);
    let outcomes: Vec<String> = store
        .attempt_log("w1")
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["failed", "delivered"]);
}

#[test]
fn a_dead_port_is_recorded_and_delivered_once_the_server_is_up() {
    // Take a free port, then close it: connecting is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = TempDir::new("webhook-dead");
    let sends = [webhook_send("w1", &url), webhook_send("w2", &url)];
    let mut store = store_with(&dir, &sends);
    let mut deliverer = webhook(None, fast_policy());

    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (0, 2), "{report:?}");
    for id in ["w1", "w2"] {
        let delivery = store.delivery(id).unwrap().unwrap();
        assert_eq!(delivery.delivered_at, None);
        assert_eq!(delivery.next_attempt_at, Some(at(10, 1)));
        let error = delivery.last_error.unwrap();
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    }
    // The second was not tried against a host that just failed.
    assert!(
        report.errors[1].contains("not tried"),
        "{:?}",
        report.errors
    );

    // A later call while still down: recorded again, backing off further.
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 1)).unwrap();
    assert_eq!(report.failed, 2);
    let w1 = store.delivery("w1").unwrap().unwrap();
    assert_eq!((w1.attempts, w1.next_attempt_at), (2, Some(at(10, 3))));

    let server = Server::on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 3)).unwrap();
    assert_eq!((report.delivered, report.failed), (2, 0), "{report:?}");
    let keys: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("Idempotency-Key").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(keys, ["w1", "w2"]);
    assert!(store.undelivered(at(23, 0)).unwrap().is_empty());
}

#[test]
fn a_4xx_is_not_retried_within_the_call_and_waits_longer() {
    let server = Server::start();
    server.answer(&[422]);
    let dir = TempDir::new("webhook-4xx");
    let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/hook"))]);
    let mut deliverer = webhook(None, fast_policy());

    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(server.requests().len(), 1);
    let delivery = store.delivery("w1").unwrap().unwrap();
    assert_eq!(delivery.next_attempt_at, Some(at(11, 0)));
    assert!(delivery.last_error.unwrap().contains("HTTP 422"));
}

#[test]
fn a_429_is_transient() {
    let server = Server::start();
    server.answer(&[429, 408]);
    let dir = TempDir::new("webhook-429");
    let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/hook"))]);
    let mut deliverer = webhook(None, fast_policy());
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_429_with_retry_after_waits_as_asked_and_spares_the_host() {
    let server = Server::start();
    // The receiver asks for 2 hours: longer than the first backoff (1 min), so no second
    // try in this call, the next call not before 12:00, and the other send to the same
    // host is not tried either.
    server.answer_with(429, &["Retry-After: 7200"]);
    let dir = TempDir::new("webhook-retry-after");
    let url = server.url("/hook");
    let mut store = store_with(&dir, &[webhook_send("w1", &url), webhook_send("w2", &url)]);
    let mut deliverer = webhook(None, fast_policy());

    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((report.delivered, report.failed), (0, 2));
    assert_eq!(server.requests().len(), 1);
    for id in ["w1", "w2"] {
        let delivery = store.delivery(id).unwrap().unwrap();
        assert_eq!(delivery.next_attempt_at, Some(at(12, 0)), "{id}");
        let error = delivery.last_error.unwrap();
        assert!(
            error.contains("HTTP 429") && error.contains("retry after 7200s"),
            "{error}"
        );
    }
    // Not due before then; delivered once the wait is over.
    let report = deliver_pending(&mut store, &mut deliverer, at(11, 59)).unwrap();
    assert_eq!((report.delivered, report.failed), (0, 0));
    let report = deliver_pending(&mut store, &mut deliverer, at(12, 0)).unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_retry_after_date_counts_from_the_receivers_date_or_else_the_ticks_clock() {
    let cases: [(&str, &[&str], DateTime<Utc>); 2] = [
        (
            // Ten minutes after the receiver's own `Date`, whatever this machine's clock says.
            "date",
            &[
                "Date: Tue, 24 Nov 2026 09:00:00 GMT",
                "Retry-After: Tue, 24 Nov 2026 09:10:00 GMT",
            ],
            at(10, 10),
        ),
        (
            // No `Date`: counted from the tick's `now` (10:00 on 1 May 2024, years before
            // this machine's clock), so the wait is 25 minutes, not nothing.
            "no-date",
            &["Retry-After: Wed, 01 May 2024 10:25:00 GMT"],
            at(10, 25),
        ),
    ];
    for (name, headers, next_attempt) in cases {
        let server = Server::start();
        server.answer_with(503, headers);
        let dir = TempDir::new(&format!("webhook-retry-after-{name}"));
        let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/hook"))]);
        let mut deliverer = webhook(None, fast_policy());
        let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
        assert_eq!(report.failed, 1, "{name}");
        assert_eq!(server.requests().len(), 1, "{name}");
        let delivery = store.delivery("w1").unwrap().unwrap();
        assert_eq!(delivery.next_attempt_at, Some(next_attempt), "{name}");
    }
}

#[test]
fn a_short_retry_after_is_waited_within_the_call() {
    let server = Server::start();
    // No longer than the pause before the next try (10 ms here): tried again at once.
    server.answer_with(429, &["Retry-After: 0"]);
    let dir = TempDir::new("webhook-retry-after-short");
    let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/hook"))]);
    let mut deliverer = webhook(None, fast_policy());
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_redirect_is_not_followed() {
    let server = Server::start();
    server.answer(&[302]);
    let dir = TempDir::new("webhook-302");
    let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/hook"))]);
    let mut deliverer = webhook(None, fast_policy());
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(server.requests().len(), 1);
    assert!(
        report.errors[0].contains("redirects to http://elsewhere.invalid/"),
        "{:?}",
        report.errors
    );
}

#[test]
fn delivery_gives_up_after_the_last_attempt_and_keeps_the_record() {
    let server = Server::start();
    server.answer(&[404, 404]);
    let dir = TempDir::new("webhook-give-up");
    let mut store = store_with(&dir, &[webhook_send("w1", &server.url("/gone"))]);
    let policy = RetryPolicy {
        max_attempts: 2,
        ..fast_policy()
    };
    let mut deliverer = webhook(None, policy);

    let first = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!((first.failed, first.gave_up), (1, 0));
    let second = deliver_pending(&mut store, &mut deliverer, at(11, 0)).unwrap();
    assert_eq!((second.failed, second.gave_up), (1, 1));
    assert!(
        second.errors[0].contains("gave up after 2 attempts"),
        "{second:?}"
    );
    let delivery = store.delivery("w1").unwrap().unwrap();
    assert_eq!(delivery.gave_up_at, Some(at(11, 0)));
    assert_eq!(delivery.delivered_at, None);
    assert!(delivery.last_error.unwrap().contains("HTTP 404"));
    // Never tried again, and still there to see.
    let later = deliver_pending(&mut store, &mut deliverer, at(23, 0)).unwrap();
    assert_eq!((later.delivered, later.failed), (0, 0));
    assert_eq!(server.requests().len(), 2);
    assert_eq!(store.sends().unwrap().len(), 1);
    let outcomes: Vec<String> = store
        .attempt_log("w1")
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["failed", "gave_up"]);
}

#[test]
fn a_send_with_nowhere_to_go_is_recorded_as_failed() {
    let dir = TempDir::new("webhook-nowhere");
    let mut store = store_with(&dir, &[email("e1", Group::Treatment)]);
    let mut deliverer = webhook(None, fast_policy());
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!(report.failed, 1);
    assert!(
        report.errors[0].contains("no webhook endpoint"),
        "{report:?}"
    );
    let delivery = store.delivery("e1").unwrap().unwrap();
    assert_eq!(delivery.next_attempt_at, Some(at(11, 0)));
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_without_tls_is_a_clear_failure() {
    let dir = TempDir::new("webhook-no-tls");
    let mut store = store_with(&dir, &[webhook_send("w1", "https://127.0.0.1:9/hook")]);
    let mut deliverer = webhook(None, fast_policy());
    let report = deliver_pending(&mut store, &mut deliverer, at(10, 0)).unwrap();
    assert_eq!(report.failed, 1);
    assert!(report.errors[0].contains("without TLS"), "{report:?}");
}
