"""Neural networks: the encoders (:mod:`afxest.nn.encoders`), the normalizing flows
(:mod:`afxest.nn.flows`) and the heads (:mod:`afxest.nn.heads`) that an estimator
(:mod:`afxest.nn.estimator`) assembles, and the compressor proxy (:mod:`afxest.nn.proxy`)."""
