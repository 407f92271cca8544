"""The Haar transform moved to `unroll.wavelets` (the maths layer, so that models can use it too);
these names stay for code that imported them from here."""

from unroll.wavelets import haar_forward, haar_inverse

__all__ = ["haar_forward", "haar_inverse"]
