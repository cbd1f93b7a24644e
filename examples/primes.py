"""Count the primes in ranges of numbers: pure-Python CPU work, one range a job.

    lb demo --map examples/primes.py:count_primes --inputs examples/primes.jsonl

Each line of primes.jsonl is ``[start, stop]``, the two positional arguments.
"""


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    divisor = 3
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 2
    return True


def count_primes(start: int, stop: int) -> int:
    """How many primes p have start <= p < stop."""
    return sum(1 for n in range(start, stop) if is_prime(n))
