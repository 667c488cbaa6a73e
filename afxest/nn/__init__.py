"""Neural-network building blocks: normalizing flows (:mod:`afxest.nn.flows`) and the
estimator heads that turn an encoder embedding into parameters (:mod:`afxest.nn.heads`)."""
