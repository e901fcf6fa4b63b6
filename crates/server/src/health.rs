//! A client-side health report: what `watchnext health` and `watchnext demo`
//! print. It asks the server over real gRPC, the way an operator's tools
//! would: reflection for the list of services, `grpc.health.v1` for each.

use std::fmt;

use anyhow::Context as _;
use tokio_stream::StreamExt as _;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use watchnext_proto::service_names;

/// Health of every service of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The overall (`""`) status.
    pub process_serving: bool,
    /// Services listed by reflection.
    pub services: Vec<String>,
    /// `(health check name, status)` for each watchnext service.
    pub statuses: Vec<(String, String)>,
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "process: {}", if self.process_serving { "SERVING" } else { "NOT_SERVING" })?;
        for (name, status) in &self.statuses {
            writeln!(f, "  {name:<45} {status}")?;
        }
        write!(f, "services (reflection): {}", self.services.join(", "))
    }
}

/// Lists services through reflection `v1`.
pub async fn list_services(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    let first = stream.next().await.ok_or_else(|| anyhow::anyhow!("reflection closed without an answer"))??;
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        anyhow::bail!("reflection answered ListServices with something else");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    Ok(names)
}

/// Connects to `addr` (an `https://` one with `tls`'s CA and client
/// certificate) and builds the report.
pub async fn check(addr: &str, tls: &watchnext_core::config::TlsConfig) -> anyhow::Result<HealthReport> {
    let channel = crate::tls::endpoint("--addr", addr, tls)
        .with_context(|| format!("`{addr}` cannot be reached as given (e.g. http://127.0.0.1:50051)"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let services = list_services(channel.clone()).await?;
    let mut health = HealthClient::new(channel);
    let overall = health.check(HealthCheckRequest { service: String::new() }).await?.into_inner();
    let mut statuses = Vec::new();
    for service in services.iter().filter(|s| s.starts_with("watchnext.")) {
        let mut names = vec![service.clone()];
        if service == service_names::CANDIDATE_GENERATOR {
            names.extend(watchnext_core::registry::NAMES.iter().map(|g| format!("{service}/{g}")));
        }
        for name in names {
            match health.check(HealthCheckRequest { service: name.clone() }).await {
                Ok(r) => statuses.push((name, r.into_inner().status().as_str_name().to_owned())),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(s.into()),
            }
        }
    }
    Ok(HealthReport { process_serving: overall.status() == ServingStatus::Serving, services, statuses })
}
