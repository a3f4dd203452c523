//! Relaying the migration stream from one server to another through pipes
//! (`send_mig_data_read_relayed` / `finish_mig_data_relay` / `send_mig_data_write_relay`): the
//! bytes arrive whole and in order, small and error replies take the ordinary path, and a
//! source that fails part way cuts the destination's message and closes that connection.

use std::collections::VecDeque;

use vfio_migration::Errno;

use super::fake::Answer;
use super::fake::Logged;
use super::fake::ServedDevice;
use super::fake::start;
use crate::client::Client;
use crate::client::ClientError;
use crate::message::Reply;
use crate::message::Request;
use crate::migration::MigDataReadReply;
use crate::migration::MigDataWriteReply;
use crate::migration::read_reply_prefix;

/// A source serving `stream` in MIG_DATA_READ replies, failing the `errno_at`-th read (from 0)
/// with EIO.
fn source(stream: Vec<u8>, errno_at: Option<usize>) -> (Client, super::fake::FakeServer) {
    let mut position = 0;
    let mut reads = 0;
    let (client, server) = start(ServedDevice::default(), move |_, _, request, _| {
        let Request::MigDataRead(head) = request else {
            panic!("unexpected {request:?}");
        };
        reads += 1;
        if errno_at == Some(reads - 1) {
            return Answer::Error(Errno::EIO);
        }
        let end = (position + head.size as usize).min(stream.len());
        let data = stream[position..end].to_vec();
        position = end;
        Answer::ok(Reply::MigDataRead(MigDataReadReply { data }))
    });
    (client.unwrap(), server)
}

/// A destination that accepts every MIG_DATA_WRITE.
fn destination() -> (Client, super::fake::FakeServer) {
    let (client, server) = start(ServedDevice::default(), |_, _, request, _| match request {
        Request::MigDataWrite(_) => Answer::ok(Reply::MigDataWrite(MigDataWriteReply)),
        other => panic!("unexpected {other:?}"),
    });
    (client.unwrap(), server)
}

fn written(log: &[Logged]) -> Vec<u8> {
    log.iter()
        .filter_map(|l| match &l.request {
            Request::MigDataWrite(w) => Some(w.data.as_slice()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .concat()
}

/// Relays everything `src` offers into `dest` with four reads in flight, as the orchestrator
/// does; returns how many chunks went through a pipe.
fn relay_all(src: &mut Client, dest: &mut Client) -> Result<usize, ClientError> {
    let chunk = src.max_data_xfer_size();
    let (mut reads, mut writes) = (VecDeque::new(), VecDeque::new());
    let (mut piped, mut ended) = (0, false);
    loop {
        while !ended && reads.len() < 4 {
            reads.push_back(src.send_mig_data_read_relayed(chunk)?);
        }
        let Some(pending) = reads.pop_front() else {
            break;
        };
        let reply = src.finish_mig_data_relay(pending)?;
        ended |= reply.is_short();
        piped += usize::from(reply.is_piped());
        if !reply.is_empty() {
            writes.push_back(dest.send_mig_data_write_relay(reply)?);
        }
        while writes.len() > 4 {
            dest.finish_mig_data_write(writes.pop_front().unwrap())?;
        }
    }
    for pending in writes {
        dest.finish_mig_data_write(pending)?;
    }
    Ok(piped)
}

#[test]
fn relayed_stream_arrives_whole_and_in_order() {
    // Three full 1 MiB chunks, one large short one and then nothing.
    let stream: Vec<u8> = (0..(3 << 20) + 200_000u32)
        .map(|i| (i % 253) as u8)
        .collect();
    let (mut src, src_server) = source(stream.clone(), None);
    let (mut dest, dest_server) = destination();
    let piped = relay_all(&mut src, &mut dest).unwrap();
    assert_eq!(piped, 4, "every large reply went through a pipe");
    drop((src, dest));
    src_server.join();
    assert!(written(&dest_server.join()) == stream);
}

#[test]
fn small_replies_are_relayed_as_messages() {
    let stream: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
    let (mut src, src_server) = source(stream.clone(), None);
    let (mut dest, dest_server) = destination();
    assert_eq!(relay_all(&mut src, &mut dest).unwrap(), 0);
    drop((src, dest));
    src_server.join();
    assert_eq!(written(&dest_server.join()), stream);
}

#[test]
fn an_error_reply_is_the_sources_errno_and_the_connection_goes_on() {
    let (mut src, src_server) = source(vec![1; 4 << 20], Some(1));
    let (mut dest, dest_server) = destination();
    let chunk = src.max_data_xfer_size();
    let mut relay_one = |src: &mut Client| -> Result<bool, ClientError> {
        let pending = src.send_mig_data_read_relayed(chunk)?;
        let reply = src.finish_mig_data_relay(pending)?;
        let piped = reply.is_piped();
        let pending = dest.send_mig_data_write_relay(reply)?;
        dest.finish_mig_data_write(pending)?;
        Ok(piped)
    };
    assert!(relay_one(&mut src).unwrap());
    let err = relay_one(&mut src).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Errno {
                errno: Errno::EIO,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        relay_one(&mut src).unwrap(),
        "the next reply is relayed again"
    );
    drop((src, dest));
    src_server.join();
    assert_eq!(written(&dest_server.join()).len(), 2 << 20);
}

#[test]
fn a_source_failing_part_way_cuts_the_destination_connection() {
    // The reply announces 1 MiB, sends 100 KiB of it, and the source hangs up.
    let (src, src_server) = start(ServedDevice::default(), |conn, header, request, _| {
        let Request::MigDataRead(head) = request else {
            panic!("unexpected {request:?}");
        };
        let mut bytes = read_reply_prefix(header, head.size as usize).to_vec();
        bytes.extend(std::iter::repeat_n(9u8, 100 << 10));
        conn.send(&bytes, &[]);
        Answer::Hangup
    });
    let mut src = src.unwrap();
    let (mut dest, dest_server) = destination();
    let chunk = src.max_data_xfer_size();
    let pending = src.send_mig_data_read_relayed(chunk).unwrap();
    let reply = src.finish_mig_data_relay(pending).unwrap();
    assert!(reply.is_piped());
    let err = dest.send_mig_data_write_relay(reply).unwrap_err();
    assert!(matches!(err, ClientError::Send { .. }), "{err:?}");
    assert!(
        dest.is_closed(),
        "a cut message leaves the connection unusable"
    );
    drop((src, dest));
    src_server.join();
    assert!(written(&dest_server.join()).is_empty());
}

#[test]
fn a_relayed_read_given_up_on_leaves_the_connection_usable() {
    let stream: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 241) as u8).collect();
    let (mut src, src_server) = source(stream.clone(), None);
    let chunk = src.max_data_xfer_size();
    // Its reply comes through a pipe nobody reads: dropped, with its data.
    let given_up = src.send_mig_data_read_relayed(chunk).unwrap();
    drop(given_up);
    let next = src.mig_data_read(chunk as usize).unwrap();
    assert!(
        next == stream[1 << 20..],
        "the next reply is found where it starts"
    );
    drop(src);
    src_server.join();
}
