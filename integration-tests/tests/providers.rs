//! `watchnext check-providers` on a real trained model and real ONNX
//! Runtime: the CPU provider times every candidate count and is its own
//! reference; a GPU provider this build or machine cannot run is reported as
//! a failure (the ranker would silently fall back to CPU), never passed.

use watchnext_server::providers::{CheckProvidersArgs, check};
use watchnext_testkit::{prepare_world, test_config, train_ranker};

#[test]
fn the_cpu_provider_is_timed_and_a_missing_gpu_provider_fails_the_check() {
    let dir = tempfile::tempdir().expect("dir");
    prepare_world(dir.path(), 3, 20_000).expect("world");
    train_ranker(dir.path(), "providers-test", 3).expect("model");
    let config = test_config(dir.path());
    let args = CheckProvidersArgs {
        model: None,
        providers: vec!["cpu".into()],
        candidates: vec![10, 200],
        runs: 3,
        tolerance: 1e-3,
    };
    let (table, failures) = check(&config, &args).expect("check");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(table.iter().map(|r| r.candidates).collect::<Vec<_>>(), [10, 200]);
    assert!(table.iter().all(|r| r.provider == "cpu" && r.median_ms > 0.0 && r.max_diff == 0.0), "{table:?}");

    let args = CheckProvidersArgs { providers: vec!["cpu".into(), "cuda".into()], ..args };
    let (table, failures) = check(&config, &args).expect("check");
    let cuda_rows = table.iter().filter(|r| r.provider == "cuda").count();
    if cuda_rows == 0 {
        // A build without the feature, or a machine without the GPU runtime.
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("cuda: unavailable"), "{failures:?}");
    } else {
        // A GPU machine: CUDA ran and agreed with the CPU.
        assert_eq!(cuda_rows, 2);
        assert!(failures.is_empty(), "{failures:?}");
    }
}
