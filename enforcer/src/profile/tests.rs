use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn sample(key_id: &str) -> Profile {
    Profile {
        workload: "svc".into(),
        identity: 256,
        tags: BTreeMap::from([
            ("@sys:uid".to_owned(), "65534".to_owned()),
            ("app".to_owned(), "svc".to_owned()),
        ]),
        addresses: vec!["10.0.0.2".into(), "fd00::2".into()],
        host: "host-a".into(),
        key_id: key_id.into(),
        issued_at: 1_000,
        expires_at: 1_000 + VALIDITY_SECS,
    }
}

fn fresh_key() -> (tempfile::TempDir, HostKey) {
    let dir = tempfile::tempdir().expect("tmp");
    let key = HostKey::load_or_create(dir.path()).expect("key");
    (dir, key)
}

#[test]
fn signed_profile_verifies_and_round_trips_through_json() {
    let (_dir, key) = fresh_key();
    let signed = SignedProfile::sign(sample(&key.public().id()), &key);
    let json = serde_json::to_string_pretty(&signed).expect("json");
    let back = SignedProfile::from_json(&json).expect("parse");
    assert_eq!(back.verify(&[key.public()], 1_500), Ok(sample(&key.public().id())));
}

#[test]
fn a_changed_tag_is_detected_whether_in_the_readable_or_the_signed_part() {
    let (_dir, key) = fresh_key();
    let signed = SignedProfile::sign(sample(&key.public().id()), &key);

    let mut readable = signed.clone();
    readable.profile.tags.insert("@sys:uid".into(), "0".into());
    assert_eq!(readable.verify(&[key.public()], 1_500), Err(VerifyError::Tampered { field: "tags" }));

    let mut forged = signed.clone();
    let mut p = sample(&key.public().id());
    p.tags.insert("@sys:uid".into(), "0".into());
    forged.encoded = B64.encode(encode::encode(&p));
    forged.profile = p;
    assert_eq!(forged.verify(&[key.public()], 1_500), Err(VerifyError::BadSignature));
}

#[test]
fn expiry_unknown_keys_and_future_profiles_are_refused() {
    let (_dir, key) = fresh_key();
    let (_other_dir, other) = fresh_key();
    let signed = SignedProfile::sign(sample(&key.public().id()), &key);
    assert!(matches!(signed.verify(&[key.public()], 1_000 + VALIDITY_SECS), Err(VerifyError::Expired { .. })));
    assert!(matches!(signed.verify(&[other.public()], 1_500), Err(VerifyError::UnknownKey { .. })));
    assert!(matches!(signed.verify(&[key.public()], 100), Err(VerifyError::NotYetValid { .. })));
}

#[test]
fn host_key_is_private_and_stable() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tmp");
    let first = HostKey::load_or_create(dir.path()).expect("create");
    let mode = std::fs::metadata(dir.path().join(key::PRIVATE_FILE)).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = HostKey::load_or_create(dir.path()).expect("reload");
    assert_eq!(first.public(), second.public());
    let public = PublicKey::load(&dir.path().join(key::PUBLIC_FILE)).expect("public file");
    assert_eq!(public, first.public());
    assert!(format!("{first:?}").starts_with("HostKey(ed25519:"), "Debug shows only the key id");

    std::fs::set_permissions(dir.path().join(key::PRIVATE_FILE), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(HostKey::load_or_create(dir.path()), Err(KeyError::Permissions { .. })));
}

#[test]
fn non_canonical_encodings_are_refused() {
    let p = sample("ed25519:00");
    let bytes = encode::encode(&p);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(encode::decode(&trailing), Err(DecodeError::Trailing(1)));
    assert!(matches!(encode::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated(_))));
    assert_eq!(encode::decode(b"XXXX"), Err(DecodeError::BadHeader));
}

fn arb_profile() -> impl Strategy<Value = Profile> {
    (
        "[a-z/]{0,20}",
        any::<u32>(),
        proptest::collection::btree_map("[@a-z:._-]{1,12}", ".{0,12}", 0..6),
        proptest::collection::vec("[0-9a-f.:]{1,20}", 0..4),
        ".{0,16}",
        "[a-z0-9:]{0,24}",
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(workload, identity, tags, addresses, host, key_id, issued_at, expires_at)| Profile {
            workload,
            identity,
            tags,
            addresses,
            host,
            key_id,
            issued_at,
            expires_at,
        })
}

proptest! {
    #[test]
    fn canonical_encoding_round_trips_byte_for_byte(p in arb_profile()) {
        let bytes = encode::encode(&p);
        let decoded = encode::decode(&bytes).expect("own encoding decodes");
        prop_assert_eq!(encode::encode(&decoded), bytes);
        let mut normalized = p.addresses.clone();
        normalized.sort();
        normalized.dedup();
        prop_assert_eq!(decoded.addresses.clone(), normalized);
        prop_assert_eq!(decoded.tags, p.tags);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(p) = encode::decode(&data) {
            prop_assert_eq!(encode::encode(&p), data);
        }
    }
}
