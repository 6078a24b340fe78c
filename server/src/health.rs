//! The standard health service, with one change: a `Watch` stream ends after it reports
//! NOT_SERVING. On shutdown every service is set NOT_SERVING, so watchers learn it and their
//! streams end; otherwise a health watcher (a load balancer's, say) would hold the graceful
//! shutdown open forever, since it waits for every open stream.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// [`HealthService`] whose watch streams end after NOT_SERVING.
pub struct EndingHealth {
    /// The standard service, reading the reporter's statuses.
    inner: HealthService,
}

/// The reporter to set statuses with, and the service to mount.
pub fn health() -> (HealthReporter, HealthServer<EndingHealth>) {
    let reporter = HealthReporter::new();
    let inner = HealthService::from_health_reporter(reporter.clone());
    (reporter, HealthServer::new(EndingHealth { inner }))
}

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for EndingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Statuses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        // Every status up to and including the first NOT_SERVING, then the end.
        let ending = futures_util::stream::unfold(Some(statuses), |statuses| async move {
            let mut statuses = statuses?;
            let status = statuses.next().await?;
            let serving = !matches!(&status, Ok(s) if s.status == ServingStatus::NotServing as i32);
            Some((status, serving.then_some(statuses)))
        })
        .boxed();
        Ok(Response::new(ending))
    }
}
