//! The control protocol on a vfio-user socket and on a standalone control socket: answered
//! while idle and while a client is attached (which is not disturbed, and a second vfio-user
//! client still gets EBUSY), hostile control clients, and the client's errors for "no socket",
//! "nobody listening" and "no control protocol there".

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use vfio_migration::Errno;
use vfu::control::ControlError;
use vfu::control::ControlHandler;
use vfu::control::HELLO;
use vfu::control::request;
use vfu::server::Server;

use crate::TestServer;
use crate::client::TestClient;
use crate::client::proposal;
use crate::device;
use crate::protocol::get_info;
use crate::socket_path;

/// Answers every request with the request it got.
struct Echo;

impl ControlHandler for Echo {
    fn answer(&self, request: &str) -> Result<serde_json::Value, String> {
        let value: serde_json::Value = serde_json::from_str(request).map_err(|e| e.to_string())?;
        if value["command"] == "fail" {
            return Err("asked to fail".to_owned());
        }
        Ok(serde_json::json!({ "echo": value }))
    }
}

fn with_control(name: &str) -> TestServer {
    TestServer::serve(name, device::new(), |server| {
        server.with_control(Arc::new(Echo))
    })
}

#[test]
fn control_requests_are_answered_idle_and_beside_an_attached_client() {
    let server = with_control("ctl-idle");
    let ask = serde_json::json!({"command": "status"});
    let result = request(&server.path, &ask).unwrap();
    assert_eq!(result["echo"], ask);
    let err = request(&server.path, &serde_json::json!({"command": "fail"})).unwrap_err();
    assert!(
        matches!(&err, ControlError::Refused { error, .. } if error == "asked to fail"),
        "{err}"
    );

    let mut client = TestClient::negotiated(&server.path);
    get_info(&mut client);
    let started = Instant::now();
    assert_eq!(request(&server.path, &ask).unwrap()["echo"], ask);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The attached client goes on; a second vfio-user client is still refused.
    get_info(&mut client);
    let mut second = TestClient::connect(&server.path);
    let answer = second.request(&proposal(Default::default()), &[]);
    assert_eq!(answer.errno(), Errno::EBUSY);
    get_info(&mut client);
}

#[test]
fn hostile_control_clients_get_a_reason_or_are_dropped_without_disturbing_anyone() {
    let server = with_control("ctl-hostile");
    // A request line that never ends.
    let mut long = UnixStream::connect(&server.path).unwrap();
    long.write_all(HELLO).unwrap();
    long.write_all(&vec![b'x'; 5000]).unwrap();
    let mut reply = String::new();
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Read::read_to_string(&mut long, &mut reply).unwrap();
    assert!(reply.contains("longer than 4096 bytes"), "{reply}");
    // Silent control clients and half hellos, many at once: the server still serves.
    let silent: Vec<UnixStream> = (0..12)
        .map(|i| {
            let mut s = UnixStream::connect(&server.path).unwrap();
            s.write_all(&HELLO[..if i % 2 == 0 { 16 } else { 5 }])
                .unwrap();
            s
        })
        .collect();
    let mut client = TestClient::negotiated(&server.path);
    get_info(&mut client);
    drop(silent);
    let ask = serde_json::json!({"command": "status"});
    assert_eq!(request(&server.path, &ask).unwrap()["echo"], ask);
    get_info(&mut client);
}

#[test]
fn a_standalone_control_socket_answers_only_the_control_protocol() {
    let path = socket_path("ctl-standalone");
    let server = Server::bind(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || server.serve_control(Arc::new(Echo), &stop))
    };
    let ask = serde_json::json!({"command": "queues"});
    assert_eq!(request(&path, &ask).unwrap()["echo"], ask);
    // A vfio-user client there is told what the socket is.
    let mut stray = UnixStream::connect(&path).unwrap();
    stray
        .write_all(zerocopy::IntoBytes::as_bytes(
            &vfu::header::Header::command(1, vfu::command::Command::VERSION, 0, false),
        ))
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stray, &mut reply).unwrap();
    assert!(reply.contains("this is a control socket"), "{reply}");
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap().unwrap();
}

#[test]
fn the_client_tells_no_socket_nobody_listening_and_no_protocol_apart() {
    let ask = serde_json::json!({"command": "status"});
    let missing = socket_path("ctl-missing");
    let err = request(&missing, &ask).unwrap_err();
    assert!(matches!(err, ControlError::NoSocket { .. }), "{err}");

    let stale = socket_path("ctl-stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let err = request(&stale, &ask).unwrap_err();
    assert!(matches!(err, ControlError::NotListening { .. }), "{err}");
    std::fs::remove_file(&stale).unwrap();

    // A vfio-user server without a control handler drops the hello as a framing error.
    let plain = TestServer::start("ctl-plain");
    let started = Instant::now();
    let err = request(&plain.path, &ask).unwrap_err();
    assert!(matches!(err, ControlError::NoReply { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
