//! `tcpstate serve`: Prometheus metrics on `GET /metrics`, computed from the
//! live connection model at each scrape (nothing extra is asked of the
//! kernel), while tracing (and recording, with `--record`).
//!
//! The pipeline runs in [`pipeline::drive`] on the current-thread runtime;
//! the HTTP server is a task of the same runtime. A scrape sends a request
//! to the view, which renders the metrics from the model after the batch it
//! is on (the pipeline steps at least every 50 ms, so that is how long a
//! scrape waits at most) and answers every scrape that waited with the same
//! text.
use crate::pipeline;
use crate::views::{Progress, View};
use crate::{
    cli::{FilterArgs, InputArgs, ServeArgs},
    model::{Connection, Model},
    sinks::http::{self, Request, Response, ServerLimits},
    source::procfs::SelfStats,
    source::Item,
    views::metrics::{self, Counters, Inputs, Limits},
};
use anyhow::Context;
use std::{sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot};

/// Scrapes waiting for the next render at most; more are answered 503.
const WAITING_SCRAPES: usize = 64;
/// How long a scrape waits for its render.
const RENDER_TIMEOUT: Duration = Duration::from_secs(10);

type Scrape = oneshot::Sender<Arc<str>>;

pub async fn run(args: &ServeArgs, verbose: bool) -> anyhow::Result<()> {
    // Bound first: a taken port is reported before the BPF program loads.
    let listener = tokio::net::TcpListener::bind(args.metrics)
        .await
        .with_context(|| format!("listening on {} (--metrics)", args.metrics))?;
    let local = listener.local_addr()?;
    // Metrics describe the whole host: no filters.
    let mut pipeline = pipeline::open(
        &InputArgs::default(),
        &args.live,
        &FilterArgs::default(),
        verbose,
        args.leak.threshold_secs,
        crate::source::live::ContextTask::OwnerTransitionsOnly,
    )?;
    let (scrapes, requests) = mpsc::channel::<Scrape>(WAITING_SCRAPES);
    let server = tokio::spawn(http::serve(
        listener,
        ServerLimits::default(),
        move |request: Request| route(request, scrapes.clone()),
    ));
    crate::status!("serving Prometheus metrics on http://{local}/metrics");
    let mut view = MetricsView {
        counters: Counters::default(),
        requests,
        limits: Limits {
            top_processes: args.top_processes,
            top_destinations: args.top_destinations,
        },
        scrapes: 0,
        cgroups: Default::default(),
    };
    let result = pipeline::drive(&mut pipeline, &mut view, None).await;
    server.abort();
    result
}

async fn route(request: Request, scrapes: mpsc::Sender<Scrape>) -> Response {
    match request.path.as_str() {
        "/metrics" => {
            let (reply, rendered) = oneshot::channel();
            if scrapes.try_send(reply).is_err() {
                return Response::error(503, "too many scrapes waiting");
            }
            match tokio::time::timeout(RENDER_TIMEOUT, rendered).await {
                Ok(Ok(text)) => Response::new(200, metrics::CONTENT_TYPE, text),
                // The tracer is stopping, or stuck.
                _ => Response::error(503, "metrics not rendered in time"),
            }
        }
        "/" => Response::new(200, "text/plain; charset=utf-8", INDEX),
        _ => Response::error(404, "not found; metrics are on /metrics"),
    }
}

const INDEX: &str = concat!(
    "tcpstate: TCP state transitions, traced in the kernel\n",
    "\n",
    "GET /metrics   Prometheus metrics (text format 0.0.4): sockets per state and per\n",
    "               process, transitions, TIME_WAIT by who closed first and by\n",
    "               destination, CLOSE_WAIT leak suspects, connections opened and\n",
    "               closed, events lost in the kernel, the tracer's own CPU and memory.\n",
);

/// Counts the items as they pass, and renders for the scrapes waiting.
struct MetricsView {
    counters: Counters,
    requests: mpsc::Receiver<Scrape>,
    limits: Limits,
    scrapes: u64,
    /// Cgroup paths, for the Kubernetes pod of an owner.
    cgroups: crate::source::cgroup::CgroupNames,
}

impl View for MetricsView {
    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        _: &Model,
        _: bool,
    ) -> std::io::Result<()> {
        self.counters.count(item, ended);
        Ok(())
    }

    fn settled(&mut self, ended: &[Connection], _: &Model, _: bool) -> std::io::Result<()> {
        self.counters.count_ended(ended);
        Ok(())
    }

    fn refresh(&mut self, progress: &Progress, _last: bool) -> std::io::Result<()> {
        let mut waiting = Vec::new();
        while let Ok(scrape) = self.requests.try_recv() {
            waiting.push(scrape);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let cgroups = std::cell::RefCell::new(&mut self.cgroups);
        let pod_of = |id: u64| {
            let view = cgroups.borrow_mut().view(id, true);
            Some(metrics::Pod {
                namespace: view.namespace?,
                name: view.pod?,
            })
        };
        let text: Arc<str> = metrics::render(&Inputs {
            model: progress.model,
            counters: &self.counters,
            source: progress.stats(),
            now_ns: progress.now_ns(),
            limits: self.limits,
            process: SelfStats::read(),
            pod_of: &pod_of,
        })
        .into();
        for scrape in waiting {
            if scrape.send(text.clone()).is_ok() {
                self.scrapes += 1;
            }
        }
        Ok(())
    }

    /// Scrapes answered.
    fn shown(&self) -> u64 {
        self.scrapes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn request(path: &str) -> Request {
        Request {
            method: hyper::Method::GET,
            path: path.into(),
        }
    }

    #[test]
    fn listens_on_loopback_unless_told_otherwise() {
        let Command::Serve(args) = Cli::try_parse_from(["tcpstate", "serve"]).unwrap().command
        else {
            panic!("not serve");
        };
        assert_eq!(args.metrics, "127.0.0.1:9464".parse().unwrap());
        assert_eq!((args.top_processes, args.top_destinations), (20, 20));
        assert_eq!(args.leak.threshold_secs, 30);
        let cli = Cli::try_parse_from([
            "tcpstate",
            "serve",
            "--metrics",
            "[::]:9100",
            "--top-processes",
            "5",
            "--record",
            "/tmp/x.rec",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.metrics, "[::]:9100".parse().unwrap());
        assert_eq!(args.top_processes, 5);
        assert_eq!(args.live.record.as_deref(), Some("/tmp/x.rec".as_ref()));
        assert!(Cli::try_parse_from(["tcpstate", "serve", "--metrics", "localhost"]).is_err());
    }

    #[tokio::test]
    async fn routes() {
        let (scrapes, mut requests) = mpsc::channel::<Scrape>(1);
        // The view's side: answers one scrape.
        let view = tokio::spawn(async move {
            let scrape = requests.recv().await.unwrap();
            scrape.send(Arc::from("up 1\n")).unwrap();
        });
        let metrics = route(request("/metrics"), scrapes.clone()).await;
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, metrics::CONTENT_TYPE);
        assert_eq!(&*metrics.body, "up 1\n");
        view.await.unwrap();
        // The view is gone (the tracer stops): 503, not a hang.
        let gone = route(request("/metrics"), scrapes).await;
        assert_eq!(gone.status, 503);
        let (scrapes, _requests) = mpsc::channel::<Scrape>(1);
        let index = route(request("/"), scrapes.clone()).await;
        assert_eq!(index.status, 200);
        assert!(index.body.contains("/metrics"));
        assert_eq!(route(request("/metricsx"), scrapes).await.status, 404);
    }
}
