"""Flax NNX models: MGSTNet (unrolled, paper Section II), the CNN baselines MADN, IDC and MTWDN, their
shared layers (`blocks`; the baselines' multi-scale helpers are pure JAX in `unroll.multiscale`) and
the one place that builds any of them from a configuration (`registry`)."""

from unroll.models.idc import IDC, IDCOutput
from unroll.models.madn import MADN, MADNOutput
from unroll.models.mgstnet import MGSTNet, MGSTNetOutput
from unroll.models.mtwdn import MTWDN, MTWDNOutput

__all__ = ["IDC", "IDCOutput", "MADN", "MADNOutput", "MGSTNet", "MGSTNetOutput", "MTWDN",
           "MTWDNOutput"]
