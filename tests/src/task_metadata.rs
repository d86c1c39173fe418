//! An ECS task metadata endpoint (v4) stand-in: what Fargate serves every
//! container at `ECS_CONTAINER_METADATA_URI_V4`, which is outside this machine.
//!
//! It answers `GET /v4/<id>/task` with the task document in the real wire
//! format (the fields a sidecar reads: `TaskARN`, `Cluster`, `Family`,
//! `Revision`, `AvailabilityZone`, and per container `Networks[].IPv4Addresses`)
//! and `GET /v4/<id>` with the container document; anything else is a 404. One
//! server can stand in for many tasks, each under its own `<id>`, so a single
//! container serves a whole Docker harness while the network-namespace harness
//! runs one per task at Fargate's own address, `169.254.170.2`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where Fargate serves task metadata and credentials inside every task.
pub const FARGATE_METADATA_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 170, 2);

/// One task as the metadata endpoint describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDoc {
    /// The path segment after `/v4/` (on Fargate, an opaque container id).
    pub id: String,
    /// `arn:aws:ecs:<region>:<account>:task/<cluster>/<task id>`.
    pub arn: String,
    /// e.g. `us-east-2a`.
    pub availability_zone: String,
    /// The task's address (the `awsvpc` interface every container shares).
    pub ip: std::net::Ipv4Addr,
}

impl TaskDoc {
    /// Parses the `--task` form `ID=ARN,AZ,IP`.
    pub fn parse(spec: &str) -> Result<TaskDoc, String> {
        let bad = || format!("bad task {spec:?}: want ID=ARN,AZ,IPv4");
        let (id, rest) = spec.split_once('=').ok_or_else(bad)?;
        let mut parts = rest.split(',');
        let (Some(arn), Some(az), Some(ip), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if id.is_empty() || id.contains('/') || !arn.starts_with("arn:") {
            return Err(bad());
        }
        Ok(TaskDoc {
            id: id.to_string(),
            arn: arn.to_string(),
            availability_zone: az.to_string(),
            ip: ip.parse().map_err(|_| bad())?,
        })
    }

    /// The inverse of [`TaskDoc::parse`].
    pub fn spec(&self) -> String {
        format!(
            "{}={},{},{}",
            self.id, self.arn, self.availability_zone, self.ip
        )
    }

    /// `(region, account, cluster)` from the ARN, for the `Cluster` field.
    fn arn_parts(&self) -> (&str, &str, &str) {
        let mut fields = self.arn.splitn(6, ':').skip(3);
        let region = fields.next().unwrap_or_default();
        let account = fields.next().unwrap_or_default();
        let cluster = fields
            .next()
            .and_then(|r| r.strip_prefix("task/"))
            .and_then(|p| p.split('/').next())
            .unwrap_or_default();
        (region, account, cluster)
    }

    fn container(&self, name: &str) -> Value {
        json!({
            "DockerId": format!("{}-{name}", self.id),
            "Name": name,
            "DockerName": format!("ecs-{}-{name}", self.id),
            "Image": "example/app:latest",
            "Labels": { "com.amazonaws.ecs.task-arn": self.arn },
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Type": "NORMAL",
            "Networks": [{
                "NetworkMode": "awsvpc",
                "IPv4Addresses": [self.ip.to_string()],
                "IPv4SubnetCIDRBlock": format!("{}/24", self.ip),
            }],
        })
    }

    /// `GET /v4/<id>/task`.
    pub fn task_document(&self) -> Value {
        let (region, account, cluster) = self.arn_parts();
        json!({
            "Cluster": format!("arn:aws:ecs:{region}:{account}:cluster/{cluster}"),
            "TaskARN": self.arn,
            "Family": self.id,
            "Revision": "1",
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "AvailabilityZone": self.availability_zone,
            "LaunchType": "FARGATE",
            "Containers": [self.container("ztunnel"), self.container("app")],
        })
    }
}

/// A running stand-in; stops when dropped.
pub struct TaskMetadataServer {
    task: JoinHandle<()>,
}

impl TaskMetadataServer {
    /// Serves `tasks` on `listener` (bound by the caller, e.g. inside a task's
    /// network namespace).
    pub fn serve(listener: TcpListener, tasks: Vec<TaskDoc>) -> TaskMetadataServer {
        let docs: Arc<HashMap<String, TaskDoc>> =
            Arc::new(tasks.into_iter().map(|t| (t.id.clone(), t)).collect());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let docs = docs.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let reply = answer(&docs, req.uri().path());
                            async move { Ok::<_, Infallible>(reply) }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        TaskMetadataServer { task }
    }
}

impl Drop for TaskMetadataServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(docs: &HashMap<String, TaskDoc>, path: &str) -> http::Response<Full<Bytes>> {
    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    let doc = match (segments.next(), segments.next(), segments.next()) {
        (Some("v4"), Some(id), tail) => docs.get(id).and_then(|t| match tail {
            None | Some("") => Some(t.container("ztunnel")),
            Some("task") => Some(t.task_document()),
            Some(_) => None,
        }),
        _ => None,
    };
    let (status, body) = match doc {
        Some(d) => (http::StatusCode::OK, d.to_string()),
        None => (
            http::StatusCode::NOT_FOUND,
            "404 page not found\n".to_string(),
        ),
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> TaskDoc {
        TaskDoc {
            id: "c1-echo".into(),
            arn: "arn:aws:ecs:us-east-2:111122223333:task/ecs-demo-1/echo1".into(),
            availability_zone: "us-east-2a".into(),
            ip: "10.1.0.21".parse().unwrap(),
        }
    }

    #[test]
    fn task_spec_round_trips() {
        assert_eq!(
            doc().spec(),
            "c1-echo=arn:aws:ecs:us-east-2:111122223333:task/ecs-demo-1/echo1,us-east-2a,10.1.0.21"
        );
        assert_eq!(TaskDoc::parse(&doc().spec()), Ok(doc()));
        assert!(TaskDoc::parse("c1=arn:x,us-east-2a").is_err());
        assert!(TaskDoc::parse("c1=notarn,us-east-2a,10.1.0.21").is_err());
    }

    #[test]
    fn task_document_is_what_the_sidecar_reads() {
        let body = doc().task_document().to_string();
        let task = zs_ecs::parse_task_metadata(body.as_bytes()).expect("a valid document");
        assert_eq!(
            task.workload_name(),
            "ecs-task-111122223333-us-east-2-ecs-demo-1-echo1"
        );
        assert_eq!(task.locality(), ("us-east-2", "us-east-2a"));
        assert_eq!(
            task.task_ips(),
            ["10.1.0.21".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn unknown_ids_and_paths_are_not_found() {
        let docs: HashMap<String, TaskDoc> = [("c1-echo".to_string(), doc())].into();
        assert_eq!(answer(&docs, "/v4/c1-echo/task").status(), 200);
        assert_eq!(answer(&docs, "/v4/c1-echo").status(), 200);
        assert_eq!(answer(&docs, "/v4/other/task").status(), 404);
        assert_eq!(answer(&docs, "/v4/c1-echo/stats").status(), 404);
        assert_eq!(answer(&docs, "/v3/c1-echo/task").status(), 404);
    }
}
