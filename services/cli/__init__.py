"""The `twinray` command-line application: data, train, eval, up, client, demo."""
