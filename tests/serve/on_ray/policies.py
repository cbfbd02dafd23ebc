"""An autoscaling policy of a user's own, for tests that need one importable."""


def custom(ctx):
    return ctx.target_num_replicas, {}
