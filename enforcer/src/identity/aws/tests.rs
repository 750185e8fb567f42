//! Tests of `identity::aws`: verification against fixtures from `testdata/` (see its README)
//! and the `IMDSv2` flow against a local fake IMDS.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use proptest::prelude::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;

const SIGNER: &str = include_str!("testdata/signer.pem");
const OTHER: &str = include_str!("testdata/other.pem");
const DOC_A: &[u8] = include_bytes!("testdata/doc-a.json");
const DOC_B: &[u8] = include_bytes!("testdata/doc-b.json");
const SIG_A: &str = include_str!("testdata/a.rsa2048");
const SIG_A_NOATTR: &str = include_str!("testdata/a-noattr.rsa2048");
const SIG_A_BER: &str = include_str!("testdata/a-ber.rsa2048");
const SIG_A_DETACHED: &str = include_str!("testdata/a-detached.rsa2048");
const SIG_A_OTHER: &str = include_str!("testdata/a-other.rsa2048");
const SIG_A_OTHER_CERTS: &str = include_str!("testdata/a-other-certs.rsa2048");
const SIG_B: &str = include_str!("testdata/b.rsa2048");
const AWS_DOC: &[u8] = include_bytes!("testdata/aws-us-west-2.json");
const AWS_SIG: &str = include_str!("testdata/aws-us-west-2.rsa2048");

fn trusted() -> TrustedCerts {
    TrustedCerts::from_pems([("xx-test-1", SIGNER)]).expect("test signer is an RSA certificate")
}

fn doc_a_identity() -> InstanceIdentity {
    InstanceIdentity {
        account_id: "111122223333".into(),
        region: "xx-test-1".into(),
        availability_zone: "xx-test-1b".into(),
        instance_id: "i-0aaaaaaaaaaaaaaaa".into(),
        image_id: "ami-0123456789abcdef0".into(),
        instance_type: "m5.large".into(),
        architecture: Some("x86_64".into()),
        private_ip: Some("10.0.1.23".into()),
        pending_time: Some("2024-05-01T10:00:00Z".into()),
    }
}

fn tampered(doc: &[u8]) -> Vec<u8> {
    // One byte of the instance id: "i-0aaa…" becomes "i-0aab…", still valid JSON.
    let mut doc = doc.to_vec();
    let at = doc.windows(5).position(|w| w == b"i-0aa").expect("instance id") + 4;
    doc[at] = b'b';
    doc
}

#[test]
fn shipped_certificates_are_rsa() {
    for (region, pem) in certs::SHIPPED {
        let one = TrustedCerts::from_pems([(*region, *pem)]);
        assert!(one.is_ok(), "{region}: {:?}", one.err());
    }
    let aws = TrustedCerts::aws().expect("shipped certificates");
    assert_eq!(aws.len(), 39);
    for region in [
        "us-east-1",
        "us-west-2",
        "eu-central-1",
        "ap-northeast-2",
        "us-gov-west-1",
        "cn-north-1",
    ] {
        assert!(aws.regions().any(|r| r == region), "{region} missing");
    }
    let dsa_or_garbage =
        TrustedCerts::from_pems([("xx", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")]);
    assert!(matches!(dsa_or_garbage, Err(AwsError::Certificate { region, .. }) if region == "xx"));
}

#[test]
fn real_aws_signature_verifies_with_shipped_certificate() {
    let aws = TrustedCerts::aws().expect("shipped certificates");
    let id = verify(AWS_DOC, AWS_SIG, &aws).expect("real AWS document verifies");
    assert_eq!(id.account_id, "278576220453");
    assert_eq!(id.region, "us-west-2");
    assert_eq!(id.availability_zone, "us-west-2a");
    assert_eq!(id.instance_id, "i-078517ca8a70a1dde");
    assert_eq!(id.image_id, "ami-0fa9e1f64142cde17");
    assert_eq!(id.instance_type, "t2.medium");

    let err = verify(&AWS_DOC[..AWS_DOC.len() - 1], AWS_SIG, &aws).expect_err("truncated document");
    assert!(matches!(err, AwsError::ContentMismatch { .. }), "{err}");
    let only_east = TrustedCerts::from_pems([("us-west-2", include_str!("certs/us-east-1.pem"))]).expect("cert");
    let err = verify(AWS_DOC, AWS_SIG, &only_east).expect_err("wrong region certificate");
    assert!(matches!(err, AwsError::BadSignature { .. }), "{err}");
}

#[test]
fn every_encoding_verifies() {
    for (name, sig) in [
        ("attrs", SIG_A),
        ("noattr", SIG_A_NOATTR),
        ("ber", SIG_A_BER),
        ("detached", SIG_A_DETACHED),
    ] {
        let id = verify(DOC_A, sig, &trusted()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(id, doc_a_identity(), "{name}");
    }
}

#[test]
fn tags_are_the_documented_ones() {
    let tags = doc_a_identity().tags();
    let expected: BTreeMap<String, String> = [
        ("@aws:account-id", "111122223333"),
        ("@aws:region", "xx-test-1"),
        ("@aws:availability-zone", "xx-test-1b"),
        ("@aws:instance-id", "i-0aaaaaaaaaaaaaaaa"),
        ("@aws:image-id", "ami-0123456789abcdef0"),
        ("@aws:instance-type", "m5.large"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(tags, expected);
}

#[test]
fn a_signature_never_vouches_for_another_document() {
    let certs = trusted();
    for (doc, sig) in [
        (DOC_B, SIG_A),
        (DOC_A, SIG_B),
        (DOC_B, SIG_A_BER),
        (DOC_B, SIG_A_NOATTR),
    ] {
        let err = verify(doc, sig, &certs).expect_err("substituted body");
        assert!(matches!(err, AwsError::ContentMismatch { .. }), "{err}");
    }
    // Detached, the served document is what is hashed: B's bytes do not match A's digest.
    let err = verify(DOC_B, SIG_A_DETACHED, &certs).expect_err("substituted detached body");
    assert!(matches!(err, AwsError::DigestMismatch), "{err}");
    for sig in [SIG_A, SIG_A_NOATTR, SIG_A_BER] {
        let err = verify(&tampered(DOC_A), sig, &certs).expect_err("tampered body");
        assert!(matches!(err, AwsError::ContentMismatch { .. }), "{err}");
    }
    let err = verify(&tampered(DOC_A), SIG_A_DETACHED, &certs).expect_err("tampered detached body");
    assert!(matches!(err, AwsError::DigestMismatch), "{err}");
}

#[test]
fn untrusted_signers_and_regions_are_refused() {
    for sig in [SIG_A_OTHER, SIG_A_OTHER_CERTS] {
        let err = verify(DOC_A, sig, &trusted()).expect_err("untrusted signer");
        assert!(matches!(err, AwsError::BadSignature { .. }), "{err}");
    }
    let other = TrustedCerts::from_pems([("xx-test-1", OTHER)]).expect("cert");
    assert!(matches!(
        verify(DOC_A, SIG_A, &other),
        Err(AwsError::BadSignature { .. })
    ));
    let elsewhere = TrustedCerts::from_pems([("us-east-1", SIGNER)]).expect("cert");
    let err = verify(DOC_A, SIG_A, &elsewhere).expect_err("no certificate for xx-test-1");
    assert!(
        matches!(&err, AwsError::UnknownRegion { region } if region == "xx-test-1"),
        "{err}"
    );
    assert!(
        verify(AWS_DOC, AWS_SIG, &trusted()).is_err(),
        "AWS document with only the test signer"
    );
}

#[test]
fn garbage_signatures_are_refused() {
    let half = &SIG_A[..SIG_A.len() / 2];
    let no_signers = base64::engine::general_purpose::STANDARD.encode([0x30, 0x03, 0x06, 0x01, 0x00]);
    for sig in ["", "not base64!", "AAAA", half, &no_signers, "MIAGCSqGSIb3DQEHAqCA"] {
        let err = verify(DOC_A, sig, &trusted()).expect_err("garbage");
        assert!(matches!(err, AwsError::BadSignature { .. }), "{sig:?}: {err}");
    }
}

#[test]
fn invalid_documents_are_refused() {
    for doc in [
        &b"not json"[..],
        br#"{"accountId":"1234","region":"xx-test-1","availabilityZone":"a","instanceId":"i","imageId":"a","instanceType":"t"}"#,
        br#"{"accountId":"111122223333","region":"xx test","availabilityZone":"a","instanceId":"i","imageId":"a","instanceType":"t"}"#,
        br#"{"accountId":"111122223333","region":"xx-test-1"}"#,
    ] {
        assert!(matches!(InstanceIdentity::parse(doc), Err(AwsError::Document { .. })), "{doc:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_signatures_never_panic(sig in ".{0,400}", bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(verify(DOC_A, &sig, &trusted()).is_err());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        prop_assert!(verify(DOC_A, &encoded, &trusted()).is_err());
        let _ = ber::to_der(&bytes);
    }

    /// Whatever byte of a valid signature is changed, nothing but document A is ever accepted.
    #[test]
    fn mutated_signatures_accept_only_the_signed_document(at in any::<prop::sample::Index>(), xor in 1u8..) {
        let der = base64::engine::general_purpose::STANDARD
            .decode(SIG_A.replace('\n', ""))
            .expect("fixture is base64");
        let mut der = der;
        let i = at.index(der.len());
        der[i] ^= xor;
        let sig = base64::engine::general_purpose::STANDARD.encode(&der);
        if let Ok(id) = verify(DOC_A, &sig, &trusted()) {
            prop_assert_eq!(id, doc_a_identity());
        }
        prop_assert!(verify(DOC_B, &sig, &trusted()).is_err());
    }
}

/// A fake IMDS on loopback that insists on the `IMDSv2` token flow.
struct FakeImds {
    addr: SocketAddr,
    /// GETs refused for lacking the token.
    refused: Arc<AtomicUsize>,
}

const TOKEN: &str = "AQAEAtest-session-token==";

impl FakeImds {
    async fn start(document: Vec<u8>, signature: String, token_status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&refused);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (document, signature, counter) = (document.clone(), signature.clone(), Arc::clone(&counter));
                tokio::spawn(answer(stream, document, signature, token_status, counter));
            }
        });
        Self { addr, refused }
    }

    fn imds(&self) -> Imds {
        Imds::new(&format!("http://{}", self.addr)).expect("loopback URL")
    }
}

async fn answer(
    mut stream: TcpStream,
    document: Vec<u8>,
    signature: String,
    token_status: u16,
    refused: Arc<AtomicUsize>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
    };
    let has_token = header("x-aws-ec2-metadata-token").as_deref() == Some(&TOKEN.to_lowercase());
    let (status, body) = match request_line.split_whitespace().take(2).collect::<Vec<_>>()[..] {
        ["put", "/latest/api/token"] if header("x-aws-ec2-metadata-token-ttl-seconds").is_some() => {
            (token_status, TOKEN.as_bytes().to_vec())
        }
        ["get", path] if path.starts_with("/latest/dynamic/") && !has_token => {
            refused.fetch_add(1, Ordering::SeqCst);
            (401, Vec::new())
        }
        ["get", "/latest/dynamic/instance-identity/document"] => (200, document),
        ["get", "/latest/dynamic/instance-identity/rsa2048"] => (200, signature.into_bytes()),
        _ => (404, Vec::new()),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

#[tokio::test]
async fn fetch_identity_through_imdsv2() {
    let imds = FakeImds::start(DOC_A.to_vec(), SIG_A.to_owned(), 200).await;
    let id = fetch_identity(&imds.imds(), &trusted()).await.expect("valid identity");
    assert_eq!(id.tags()["@aws:instance-id"], "i-0aaaaaaaaaaaaaaaa");
    assert_eq!(id, doc_a_identity());
    assert_eq!(
        imds.refused.load(Ordering::SeqCst),
        0,
        "the client always presents the token"
    );

    // The fake really refuses token-less requests.
    let mut raw = TcpStream::connect(imds.addr).await.expect("connect");
    raw.write_all(b"GET /latest/dynamic/instance-identity/document HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut reply = String::new();
    raw.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
}

#[tokio::test]
async fn fetched_documents_that_do_not_verify_are_refused() {
    type Expected = fn(&AwsError) -> bool;
    let cases: [(Vec<u8>, &str, Expected); 4] = [
        (tampered(DOC_A), SIG_A, |e| {
            matches!(e, AwsError::ContentMismatch { .. })
        }),
        (DOC_A.to_vec(), SIG_A_OTHER, |e| {
            matches!(e, AwsError::BadSignature { .. })
        }),
        (DOC_B.to_vec(), SIG_A, |e| matches!(e, AwsError::ContentMismatch { .. })),
        (DOC_A.to_vec(), "garbage", |e| {
            matches!(e, AwsError::BadSignature { .. })
        }),
    ];
    for (document, signature, expected) in cases {
        let imds = FakeImds::start(document, signature.to_owned(), 200).await;
        let err = fetch_identity(&imds.imds(), &trusted())
            .await
            .expect_err("must be refused");
        assert!(expected(&err), "{err}");
    }
}

#[tokio::test]
async fn imds_failures_are_quick_and_clear() {
    let refused = FakeImds::start(DOC_A.to_vec(), SIG_A.to_owned(), 403).await;
    let err = fetch_identity(&refused.imds(), &trusted())
        .await
        .expect_err("token refused");
    assert!(matches!(err, AwsError::Http { status: 403, .. }), "{err}");

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let start = Instant::now();
    let imds = Imds::new(&format!("http://{addr}")).expect("url");
    let err = fetch_identity(&imds, &trusted()).await.expect_err("nothing listens");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(
        matches!(&err, AwsError::Unreachable { url, .. } if url.ends_with("/latest/api/token")),
        "{err}"
    );
    assert!(err.to_string().contains("hop limit"), "{err}");

    // A server that accepts and never answers costs one request timeout, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let imds = Imds::new(&format!("http://{}", silent.local_addr().expect("addr"))).expect("url");
    let start = Instant::now();
    let err = fetch_identity(&imds, &trusted()).await.expect_err("no answer");
    assert!(
        start.elapsed() < Imds::REQUEST_TIMEOUT + Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, AwsError::Unreachable { .. }), "{err}");
}

#[test]
fn base_urls() {
    assert_eq!(Imds::default().base(), "http://169.254.169.254");
    assert_eq!(
        Imds::new("http://127.0.0.1:8080/").expect("valid").base(),
        "http://127.0.0.1:8080"
    );
    assert_eq!(
        Imds::new("http://[fd00:ec2::254]").expect("valid").base(),
        "http://[fd00:ec2::254]"
    );
    for bad in [
        "",
        "https://169.254.169.254",
        "http://h/latest",
        "http://h/?q",
        "http://u@h",
        "169.254.169.254",
    ] {
        assert!(
            matches!(Imds::new(bad), Err(AwsError::BaseUrl { .. })),
            "{bad:?} accepted"
        );
    }
}
