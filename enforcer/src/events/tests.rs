use enforcer_common::net::v4_mapped;
use proptest::prelude::*;

use super::*;

fn header(kind: u8, verdict: Verdict) -> EventHeader {
    EventHeader {
        kind,
        verdict: verdict as u8,
        detail: DIR_EGRESS,
        proto: PROTO_TCP,
        pid: 42,
        uid: 1000,
        identity: 300,
        cgroup_id: 7,
        time_ns: 1_000_000_000,
        rule_id: 0,
        remote_identity: 1,
        comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
    }
}

fn bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: test records are plain data without padding.
    #[expect(unsafe_code, reason = "building raw records as the kernel does")]
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn net_event() -> NetEvent {
    NetEvent {
        header: header(KIND_NETWORK, Verdict::Deny),
        family: 4,
        token: 0,
        _pad: [0; 2],
        src_port: 0,
        dst_port: 443,
        src: [0; 16],
        dst: v4_mapped([127, 0, 0, 1]),
    }
}

#[test]
fn network_record_round_trips_to_the_documented_fields() {
    let e = net_event();
    let record = decode(&bytes(&e)).expect("decodes");
    assert_eq!(record, Record::Network(e));
    let clock = Clock { boot: SystemTime::UNIX_EPOCH };
    let event = describe(&record, &clock, Some("web".into()));
    let json = serde_json::to_value(&event).expect("serializes");
    assert_eq!(json["time"], "1970-01-01T00:00:01.000Z");
    assert_eq!(json["kind"], "network");
    assert_eq!(json["verdict"], "deny");
    assert_eq!(json["workload"], "web");
    assert_eq!(json["direction"], "egress");
    assert_eq!(json["protocol"], "tcp");
    assert_eq!(json["dst"], "127.0.0.1:443");
    assert_eq!(json["comm"], "curl");
    assert_eq!(json["pid"], 42);
    assert!(json["rule_id"].is_null());
}

#[test]
fn ipv6_destination_is_printed_as_ipv6() {
    let mut e = net_event();
    e.family = 6;
    e.dst = std::net::Ipv6Addr::LOCALHOST.octets();
    let event = describe(&Record::Network(e), &Clock { boot: SystemTime::UNIX_EPOCH }, None);
    let Detail::Network { dst, .. } = event.detail else { panic!("network") };
    assert_eq!(dst, "[::1]:443");
}

#[test]
fn file_record_lists_access() {
    let mut h = header(KIND_FILE, Verdict::Audit);
    h.detail = ACCESS_READ | ACCESS_WRITE;
    let mut path = [0u8; enforcer_common::file::FILE_PATH_LEN];
    path[..11].copy_from_slice(b"/etc/shadow");
    let record = decode(&bytes(&FileEvent { header: h, path })).expect("decodes");
    let event = describe(&record, &Clock { boot: SystemTime::UNIX_EPOCH }, None);
    assert_eq!(event.verdict, "audit");
    assert_eq!(event.detail, Detail::File { path: "/etc/shadow".into(), access: vec!["read", "write"], policy: None });
}

#[test]
fn short_and_unknown_records_are_errors() {
    let full = bytes(&net_event());
    assert_eq!(decode(&full[..50]), Err(DecodeError::Short { len: 50, need: size_of::<NetEvent>() }));
    assert_eq!(decode(&[]), Err(DecodeError::Short { len: 0, need: size_of::<EventHeader>() }));
    assert_eq!(decode(&[9, 0, 0]), Err(DecodeError::UnknownKind(9)));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(record) = decode(&data) {
            let _ = describe(&record, &Clock { boot: SystemTime::UNIX_EPOCH }, None);
        }
    }
}
