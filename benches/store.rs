//! Benchmarks of the store and of the reconciler's decision step.
//!
//! Run with `cargo bench --bench store`. Each group keeps its sample size and
//! measurement time small so the whole run stays well under two minutes; the
//! figures are in BENCHMARKS.md.
//!
//! - `store/open`: `Store::open` of a fresh directory, and of one that holds
//!   100 processes (the daemon's start: the copy-and-check, then the real open).
//! - `store/create_one/{100,1000}`: one `create` of one process into a store
//!   of 100 or 1,000, which commits (flush, fsync, snapshot).
//! - `store/create_100/concurrent` and `/sequential`: 100 creates of one
//!   process each, from 100 threads at once (they share commits) or one
//!   after another (each pays its own).
//! - `store/specs`: `specs()` over 100 and 1,000 stored processes.
//! - `store/put_runtime_flush`: `put_runtime` of one process, then `flush`.
//! - `plan/*`: `plan(&spec, &observed, now)` for a running process, a crashed
//!   one waiting out its backoff, and `on_exit` of a running one.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use opm::definition::{Bytes, ProcessDef};
use opm::reconcile::plan::{on_exit, plan};
use opm::spec::{Desired, Observed, Phase, Spec};
use opm::store::{NewSpec, Store};

const T0: u64 = 1_700_000_000_000;

fn spec(name: &str) -> Spec {
    Spec {
        id: 0,
        name: name.to_string(),
        desired: Desired::Running,
        generation: 1,
        created_ms: T0,
        def: ProcessDef {
            script: "node server.js --port 8080".to_string(),
            cwd: Some("/srv/app".to_string()),
            env: vec![
                ("NODE_ENV".to_string(), "production".to_string()),
                ("PORT".to_string(), "8080".to_string()),
            ],
            max_memory: Some(Bytes(512 * 1024 * 1024)),
            ..ProcessDef::default()
        },
    }
}

fn new_spec(name: &str) -> NewSpec {
    NewSpec {
        spec: spec(name),
        explicit_name: true,
        join: false,
    }
}

/// A store in `dir/db` holding `n` processes (created in one transaction).
fn populated(dir: &Path, n: usize) -> Store {
    let store = Store::open(&dir.join("db")).expect("open the store");
    if n > 0 {
        let batch = (0..n).map(|i| new_spec(&format!("proc-{i}"))).collect();
        store.create(batch).expect("create processes");
    }
    store
}

fn running(pid: u32, since_ms: u64) -> Observed {
    Observed {
        phase: Phase::Running {
            pid,
            start_time: 123_456,
            since_ms,
        },
        starts: 1,
        generation: 1,
        boot_id: "0d6f2a4e-6c1b-4f57-9a3e-2b7f1c9d8e01".to_string(),
        ..Observed::new()
    }
}

fn store_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    g.bench_function("open/fresh", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let store = Store::open(&dir.path().join("db")).expect("open");
                drop(store);
                dir
            },
            BatchSize::PerIteration,
        )
    });

    // Reopening a database with 100 processes: what a daemon start costs.
    let existing = tempfile::tempdir().expect("tempdir");
    drop(populated(existing.path(), 100));
    g.bench_function("open/100_processes", |b| {
        b.iter(|| {
            let store = Store::open(&existing.path().join("db")).expect("reopen");
            black_box(store.schema_version());
        })
    });

    // One create (one transaction and a commit) into a store of 100 and of
    // 1,000 processes; the one created is removed again outside the timing,
    // so the store keeps its size (the snapshot a commit writes grows with it).
    for n in [100usize, 1_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = populated(dir.path(), n);
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::new("create_one", n), &n, |b, _| {
            b.iter_batched(
                || {
                    for spec in store.specs().expect("specs").into_iter().skip(n) {
                        store.remove(spec.id).expect("remove");
                    }
                    i += 1;
                    i
                },
                |i| {
                    black_box(
                        store
                            .create(vec![new_spec(&format!("bench-{i}"))])
                            .expect("create"),
                    )
                },
                BatchSize::PerIteration,
            )
        });
    }

    // 100 creates at once (group commit) against the same 100 in a row, into
    // a store of 100 processes (brought back to those 100 outside the timing).
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = populated(dir.path(), 100);
        let mut round = 0u64;
        let trim = |store: &Store| {
            for spec in store.specs().expect("specs").into_iter().skip(100) {
                store.remove(spec.id).expect("remove");
            }
        };
        g.sample_size(10);
        g.bench_function("create_100/concurrent", |b| {
            b.iter_batched(
                || {
                    trim(&store);
                    round += 1;
                    round
                },
                |round| {
                    std::thread::scope(|s| {
                        for i in 0..100 {
                            let store = &store;
                            s.spawn(move || {
                                store
                                    .create(vec![new_spec(&format!("c{round}-{i}"))])
                                    .expect("create")
                            });
                        }
                    });
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("create_100/sequential", |b| {
            b.iter_batched(
                || {
                    trim(&store);
                    round += 1;
                    round
                },
                |round| {
                    for i in 0..100 {
                        store
                            .create(vec![new_spec(&format!("s{round}-{i}"))])
                            .expect("create");
                    }
                },
                BatchSize::PerIteration,
            )
        });
        g.sample_size(20);
    }

    for n in [100usize, 1_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = populated(dir.path(), n);
        g.bench_with_input(BenchmarkId::new("specs", n), &n, |b, &n| {
            b.iter(|| {
                let specs = store.specs().expect("specs");
                assert_eq!(specs.len(), n);
                black_box(specs);
            })
        });
    }

    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = populated(dir.path(), 100);
        let mut obs = running(4242, T0);
        g.bench_function("put_runtime_flush", |b| {
            b.iter(|| {
                obs.starts = obs.starts.wrapping_add(1);
                store.put_runtime(42, &obs).expect("put_runtime");
                store.flush().expect("flush");
            })
        });
    }
    g.finish();
}

fn plan_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));

    let s = spec("api");

    let up = running(4242, T0);
    g.bench_function("running", |b| {
        b.iter(|| black_box(plan(black_box(&s), black_box(&up), black_box(T0 + 60_000))))
    });

    // The third crash in a row: the restart waits out its backoff.
    let mut before = running(4242, T0);
    before.unstable = 2;
    let crashed = on_exit(&s, &before, 4242, Some(1), None, false, T0 + 1_200);
    assert!(
        plan(&s, &crashed, T0 + 1_201).actions.is_empty(),
        "a crashed process in backoff has nothing to do yet"
    );
    g.bench_function("crashed_in_backoff", |b| {
        b.iter(|| {
            black_box(plan(
                black_box(&s),
                black_box(&crashed),
                black_box(T0 + 1_201),
            ))
        })
    });

    g.bench_function("on_exit", |b| {
        b.iter(|| {
            black_box(on_exit(
                black_box(&s),
                black_box(&up),
                black_box(4242),
                Some(1),
                None,
                false,
                black_box(T0 + 1_200),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, store_benches, plan_benches);
criterion_main!(benches);
