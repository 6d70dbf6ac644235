import workers


def test_public_surface_is_pinned() -> None:
    # Adding or removing a public name is an API change: update this list on purpose.
    assert sorted(workers.__all__) == [
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
    for name in workers.__all__:
        assert getattr(workers, name) is not None
