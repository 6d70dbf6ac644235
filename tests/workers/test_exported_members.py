import progress_workers


def test_public_surface_is_pinned() -> None:
    # Adding or removing a public name is an API change: update this list on purpose.
    assert sorted(progress_workers.__all__) == [
        "AsyncProgressClient",
        "AsyncReporter",
        "BadRequest",
        "GatewayError",
        "Job",
        "JobExists",
        "JobFinished",
        "JobNotFound",
        "JobStatus",
        "PayloadTooLarge",
        "ProgressClient",
        "Reporter",
        "StoreUnavailable",
        "tracked",
    ]
    for name in progress_workers.__all__:
        assert getattr(progress_workers, name) is not None
