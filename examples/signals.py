"""Find the strongest tone in noisy signals: numpy work with arrays in and out.

    lb demo --map examples/signals.py:strongest_tone --inputs examples/signals.jsonl

Each line of signals.jsonl is an object, the keyword arguments: a seed for the
noise and the tone's frequency. The result holds numbers and an array (in the
output as ``{"$array": {"dtype": ..., "shape": ..., "data": <base64>}}``).
"""

import numpy as np

RATE = 8192  # samples per second


def strongest_tone(seed: int, frequency: float, seconds: float = 4.0) -> dict[str, object]:
    """A tone buried in noise, and what a Fourier transform finds in it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    signal = np.sin(2 * np.pi * frequency * t) + 3.0 * rng.standard_normal(t.size)
    power = np.abs(np.fft.rfft(signal)) ** 2
    frequencies = np.fft.rfftfreq(t.size, 1 / RATE)
    top = np.argsort(power)[-5:][::-1]
    return {"found": float(frequencies[top[0]]), "top5_hz": frequencies[top],
            "snr_db": float(10 * np.log10(power[top[0]] / np.median(power)))}
