"""`twinray export triton`: published model versions as a Triton model repository in the artifact store."""
