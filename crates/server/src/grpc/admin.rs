//! `watchnext.v1.Admin`: operator controls, behind a bearer token.
//!
//! The token check is a tonic interceptor, so it runs before the request
//! message is even decoded: a call without the right token learns nothing
//! about the server.

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Response, Status, metadata::MetadataMap};
use watchnext_core::InvalidRequest;
use watchnext_proto::v1::{
    ModelInfo, ReloadModelRequest, ReloadModelResponse, SetCombinerWeightsRequest, SetCombinerWeightsResponse,
    StatusRequest, StatusResponse, admin_server::Admin,
};

use crate::app::ProcessInfo;

/// Checks `authorization: Bearer <token>` against the configured token.
#[derive(Clone)]
pub struct AdminAuth {
    token: Arc<str>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth").field("configured", &!self.token.is_empty()).finish()
    }
}

impl AdminAuth {
    pub fn new(token: &str) -> Self {
        Self { token: token.into() }
    }

    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.token.is_empty() {
            return Err(Status::unauthenticated(
                "the Admin service is disabled: no admin token is configured (set admin.token or \
                 WATCHNEXT__ADMIN__TOKEN)",
            ));
        }
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("Admin calls need the header `authorization: Bearer <admin token>`")
            })?;
        if crate::auth::constant_time_eq(presented.as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the admin token presented is not the configured one"))
        }
    }
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// Serves the Admin RPCs.
#[derive(Debug)]
pub struct AdminService {
    info: Arc<ProcessInfo>,
    ranker: Option<Arc<watchnext_ranker::Ranker>>,
    recommender: Option<Arc<watchnext_recommender::Recommender>>,
    /// Where `ReloadModel` without a directory looks for the newest model.
    models: std::path::PathBuf,
}

impl AdminService {
    pub fn new(
        info: Arc<ProcessInfo>,
        ranker: Option<Arc<watchnext_ranker::Ranker>>,
        recommender: Option<Arc<watchnext_recommender::Recommender>>,
        models: std::path::PathBuf,
    ) -> Self {
        Self { info, ranker, recommender, models }
    }
}

fn validate_weights(weights: &HashMap<String, f32>) -> Result<(), InvalidRequest> {
    if weights.is_empty() {
        return Err(InvalidRequest::new("weights", "is empty; give an exponent per task, e.g. {\"click\": 1.0}"));
    }
    for (task, w) in weights {
        if task.is_empty() {
            return Err(InvalidRequest::new("weights", "has an empty task name"));
        }
        if let Some(problem) = watchnext_recommender::combiner::weight_problem(*w) {
            return Err(InvalidRequest::new(format!("weights[{task}]"), problem));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let mut status = self.info.status().await;
        let active = self.ranker.as_ref().and_then(|r| r.active());
        if let Some(ranker) = &self.ranker {
            status.models = ranker
                .loaded_models()
                .iter()
                .map(|m| ModelInfo {
                    version: m.version.clone(),
                    path: m.dir.display().to_string(),
                    active: active.as_ref().is_some_and(|a| Arc::ptr_eq(a, m)),
                    loaded_at_ms: m.loaded_at_ms,
                })
                .collect();
        }
        if let Some(recommender) = &self.recommender {
            let tasks = active.as_ref().map(|m| m.manifest.tasks.as_slice());
            status.combiner_weights = recommender.weights_in_force(tasks).into_iter().collect();
        }
        Ok(Response::new(status))
    }

    async fn reload_model(
        &self,
        request: Request<ReloadModelRequest>,
    ) -> Result<Response<ReloadModelResponse>, Status> {
        let req = request.get_ref();
        if req.rollback && !req.model_dir.is_empty() {
            return Err(InvalidRequest::new("rollback", "cannot be combined with model_dir").into());
        }
        let Some(ranker) = self.ranker.clone() else {
            return Err(super::missing("this process does not host the ranker role: send ReloadModel to the ranker"));
        };
        let (rollback, dir, models) = (req.rollback, req.model_dir.clone(), self.models.clone());
        // If this call is dropped (its deadline passed, the client left)
        // before the swap, the swap does not happen: a call answered as
        // failed never changes the active model afterwards.
        struct WithdrawOnDrop(watchnext_ranker::Intent);
        impl Drop for WithdrawOnDrop {
            fn drop(&mut self) {
                self.0.withdraw();
            }
        }
        let intent = watchnext_ranker::Intent::new();
        let _withdraw = WithdrawOnDrop(intent.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            if rollback {
                return ranker.rollback_for(Some(&intent));
            }
            let report = if dir.is_empty() {
                ranker.load_newest(&models, Some(&intent))?
            } else {
                Some(ranker.load_dir_for(std::path::Path::new(&dir), Some(&intent))?)
            };
            let active = ranker.active().map(|m| m.version.clone()).ok_or(watchnext_ranker::RankError::NoModel)?;
            let previous = report.and_then(|r| r.previous).unwrap_or_default();
            Ok((active, previous))
        })
        .await
        .map_err(|e| Status::internal(format!("reload task failed: {e}")))?;
        let (active_version, previous_version) = outcome.map_err(super::ranker::status_of)?;
        self.info.set_service(watchnext_proto::service_names::RANKER, true, "").await;
        Ok(Response::new(ReloadModelResponse { active_version, previous_version }))
    }

    async fn set_combiner_weights(
        &self,
        request: Request<SetCombinerWeightsRequest>,
    ) -> Result<Response<SetCombinerWeightsResponse>, Status> {
        validate_weights(&request.get_ref().weights)?;
        let Some(recommender) = &self.recommender else {
            return Err(super::missing(
                "this process does not host the recommender role: send SetCombinerWeights to the recommender",
            ));
        };
        let req = request.into_inner();
        let weights = req.weights.into_iter().collect();
        let effective = recommender
            .set_weights(&req.experiment_arm, weights)
            .map_err(|e| Status::invalid_argument(format!("weights: {e}")))?;
        Ok(Response::new(SetCombinerWeightsResponse { weights: effective.into_iter().collect() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().expect("ascii"));
        }
        m
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let auth = AdminAuth::new("s3cret");
        assert!(auth.check(&meta(Some("Bearer s3cret"))).is_ok());
        for bad in [None, Some("Bearer nope"), Some("s3cret"), Some("Bearer s3cre"), Some("Basic s3cret")] {
            let err = auth.check(&meta(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let disabled = AdminAuth::new("");
        let err = disabled.check(&meta(Some("Bearer "))).unwrap_err();
        assert!(err.message().contains("disabled"), "{err}");
    }

    #[test]
    fn weights_must_be_finite_non_negative() {
        let ok = HashMap::from([("click".to_owned(), 1.0)]);
        assert!(validate_weights(&ok).is_ok());
        let bad = HashMap::from([("click".to_owned(), f32::NAN)]);
        assert_eq!(validate_weights(&bad).unwrap_err().field, "weights[click]");
        assert!(validate_weights(&HashMap::new()).is_err());
    }
}
