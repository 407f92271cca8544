"""Flax NNX models: MGSTNet (unrolled, paper Section II), the CNN baselines MADN, IDC and MTWDN, and
shared blocks."""

from unroll.models.idc import IDC, IDCOutput
from unroll.models.madn import MADN, MADNOutput
from unroll.models.mgstnet import MGSTNet, MGSTNetOutput
from unroll.models.mtwdn import MTWDN, MTWDNOutput

__all__ = ["IDC", "IDCOutput", "MADN", "MADNOutput", "MGSTNet", "MGSTNetOutput", "MTWDN",
           "MTWDNOutput"]
