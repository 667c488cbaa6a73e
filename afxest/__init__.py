"""afxest: blind estimation of audio effects and synthesizer presets.

Implements Peladeau & Peeters (ICASSP 2024) and Peladeau, Fourer & Peeters (DAFx 2025).
"""

__version__ = "0.1.0"
