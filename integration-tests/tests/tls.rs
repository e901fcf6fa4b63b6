//! TLS over real loopback servers, with certificates made for each test:
//! a TLS-only listener, mutual TLS where a verified client certificate is a
//! role credential (also between the roles of a split deployment), a
//! listener that requires client certificates, and certificates replaced
//! on disk while the server runs.

use std::{path::Path, time::Duration};

use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use watchnext_core::{Role, config::TlsConfig};
use watchnext_proto::v1::{
    self as pb, FeedbackEvent, GenerateRequest, RecordRequest, TailRequest,
    candidate_generator_client::CandidateGeneratorClient, feedback_client::FeedbackClient, feedback_event::Event,
};
use watchnext_testkit::TestServer;

/// A certificate authority and certificates it signs, as PEM.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("test setup");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("test setup");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Self { cert: params.self_signed(&key).expect("test setup"), key }
    }

    /// A leaf certificate for 127.0.0.1 and localhost: `(cert PEM, key PEM)`.
    fn leaf(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("test setup");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("test setup");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("test setup");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA as `<name>-ca.pem` and a leaf as `<name>-cert.pem` / `<name>-key.pem`.
    fn write(&self, dir: &Path, name: &str) -> (String, String, String) {
        let (cert, key) = self.leaf();
        let path = |f: &str| dir.join(format!("{name}-{f}")).display().to_string();
        std::fs::write(path("ca.pem"), self.cert.pem()).expect("test setup");
        std::fs::write(path("cert.pem"), cert).expect("test setup");
        std::fs::write(path("key.pem"), key).expect("test setup");
        (path("ca.pem"), path("cert.pem"), path("key.pem"))
    }
}

/// A TLS channel to `server` trusting `ca`, presenting `identity` if any.
async fn tls_channel(server: &TestServer, ca: &Ca, identity: Option<(String, String)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.cert.pem()));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", server.addr()))
        .expect("test setup")
        .tls_config(tls)
        .expect("test setup")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

fn click() -> FeedbackEvent {
    FeedbackEvent {
        user_id: "u1".into(),
        video_id: "a".into(),
        timestamp_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("test setup")
            .as_millis() as i64
            - 60_000,
        event: Some(Event::Click(pb::Click {})),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_tls_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (_, cert, key) = ca.write(dir.path(), "server");
    let server = TestServer::start_tls(move |c| {
        c.server.role = Role::Feedback;
        c.tls = TlsConfig { cert_file: cert, key_file: key, ..TlsConfig::default() };
    })
    .await
    .unwrap();
    let channel = tls_channel(&server, &ca, None).await.expect("TLS client connects");
    let ack = FeedbackClient::new(channel).record(RecordRequest { events: vec![click()] }).await.unwrap();
    assert_eq!(ack.get_ref().accepted, 1);

    // Plaintext HTTP/2 to the TLS port gets nowhere.
    let plain = Endpoint::from_shared(format!("http://{}", server.addr())).unwrap();
    let plain = plain.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(2));
    if let Ok(channel) = plain.connect().await {
        let err = FeedbackClient::new(channel).record(RecordRequest { events: vec![click()] }).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok);
    }
    // A client that does not trust the server's CA cannot connect.
    assert!(tls_channel(&server, &Ca::new(), None).await.is_err(), "an unknown CA is refused");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_is_a_role_credential_between_roles() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new();
    let roles_ca = Ca::new();
    let (server_ca_file, cert, key) = server_ca.write(dir.path(), "feedback");
    let (roles_ca_file, role_cert, role_key) = roles_ca.write(dir.path(), "role");
    let feedback = TestServer::start_tls({
        let (cert, key, roles_ca_file) = (cert.clone(), key.clone(), roles_ca_file.clone());
        move |c| {
            c.server.role = Role::Feedback;
            c.auth.role_token = "a-role-token-nobody-here-presents".into();
            c.tls = TlsConfig { cert_file: cert, key_file: key, client_ca_file: roles_ca_file, ..TlsConfig::default() };
        }
    })
    .await
    .unwrap();

    // Without a client certificate: Record (open) works, Tail is refused.
    let anonymous = tls_channel(&feedback, &server_ca, None).await.unwrap();
    FeedbackClient::new(anonymous.clone()).record(RecordRequest { events: vec![click()] }).await.unwrap();
    let Err(err) = FeedbackClient::new(anonymous).tail(TailRequest::default()).await else {
        panic!("Tail without a role credential was served")
    };
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("client certificate"), "{}", err.message());
    // A certificate from another CA is refused (in TLS 1.3 the client only
    // learns it at its first call).
    let stranger_refused = match tls_channel(&feedback, &server_ca, Some(Ca::new().leaf())).await {
        Err(_) => true,
        Ok(ch) => FeedbackClient::new(ch).tail(TailRequest::default()).await.is_err(),
    };
    assert!(stranger_refused, "a certificate from an unknown CA is no credential");
    // With the roles' certificate: Tail streams.
    let role = tls_channel(&feedback, &server_ca, Some(roles_ca.leaf())).await.unwrap();
    let mut stream = FeedbackClient::new(role).tail(TailRequest::default()).await.expect("a role").into_inner();
    assert_eq!(stream.message().await.unwrap().expect("a batch").first_sequence, 1);
    drop(stream);

    // A co-watch role follows the log over TLS with its certificate (no token).
    let url = format!("https://{}", feedback.addr());
    let cowatch = TestServer::start(move |c| {
        c.server.role = Role::Generator(watchnext_core::event::Source::Cowatch);
        c.endpoints.feedback = url;
        c.tls = TlsConfig {
            ca_file: server_ca_file,
            client_cert_file: role_cert,
            client_key_file: role_key,
            ..TlsConfig::default()
        };
    })
    .await
    .unwrap();
    let base =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 3_600_000;
    let watch = |user: String, video: &str, at: i64| FeedbackEvent {
        user_id: user,
        video_id: video.into(),
        timestamp_ms: at,
        event: Some(Event::Watch(pb::Watch { seconds_watched: 60.0, video_duration_seconds: 60.0 })),
        ..Default::default()
    };
    let events: Vec<FeedbackEvent> = (0..10)
        .flat_map(|u| {
            [
                watch(format!("t{u}"), "query", base + u * 1_000),
                watch(format!("t{u}"), "partner", base + u * 1_000 + 100),
            ]
        })
        .collect();
    let writer = tls_channel(&feedback, &server_ca, None).await.unwrap();
    FeedbackClient::new(writer).record(RecordRequest { events }).await.unwrap();
    let request = GenerateRequest { query_video_id: "query".into(), max_candidates: 10, ..Default::default() };
    let mut learnt = false;
    for _ in 0..100 {
        let answer = CandidateGeneratorClient::new(cowatch.channel.clone()).generate(request.clone()).await.unwrap();
        if answer.get_ref().candidates.iter().any(|c| c.video_id == "partner") {
            learnt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(learnt, "the follower tailed the log over mutual TLS");
    cowatch.stop().await.unwrap();
    feedback.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_and_certificates_replaced_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new();
    let roles_ca = Ca::new();
    let (_, cert, key) = old_ca.write(dir.path(), "old");
    let (roles_ca_file, _, _) = roles_ca.write(dir.path(), "roles");
    let server = TestServer::start_tls({
        let (cert, key) = (cert.clone(), key.clone());
        move |c| {
            c.server.role = Role::Feedback;
            c.tls = TlsConfig {
                cert_file: cert,
                key_file: key,
                client_ca_file: roles_ca_file,
                require_client_cert: true,
                reload_seconds: 1,
                ..TlsConfig::default()
            };
        }
    })
    .await
    .unwrap();
    // Required: no certificate, no call.
    let refused = match tls_channel(&server, &old_ca, None).await {
        Err(_) => true,
        Ok(ch) => FeedbackClient::new(ch).record(RecordRequest { events: vec![click()] }).await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
    let with_cert = tls_channel(&server, &old_ca, Some(roles_ca.leaf())).await.unwrap();
    FeedbackClient::new(with_cert).record(RecordRequest { events: vec![click()] }).await.unwrap();

    // The server's certificate is replaced on disk by one from a new CA.
    let new_ca = Ca::new();
    let (new_cert, new_key) = new_ca.leaf();
    std::fs::write(format!("{key}.tmp"), new_key).unwrap();
    std::fs::write(format!("{cert}.tmp"), new_cert).unwrap();
    std::fs::rename(format!("{key}.tmp"), &key).unwrap();
    std::fs::rename(format!("{cert}.tmp"), &cert).unwrap();
    let mut switched = false;
    for _ in 0..100 {
        if let Ok(ch) = tls_channel(&server, &new_ca, Some(roles_ca.leaf())).await
            && FeedbackClient::new(ch).record(RecordRequest { events: vec![click()] }).await.is_ok()
        {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "new connections get the new certificate without a restart");
    assert!(tls_channel(&server, &old_ca, Some(roles_ca.leaf())).await.is_err(), "the old one is gone");
    server.stop().await.unwrap();
}
