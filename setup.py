"""The one compiled part, built where it can be: the datagram tag (see loadbalancer/gmac.py).

``optional``: where there is no C compiler or no OpenSSL headers the build goes on without
it and ``lb`` uses the pure-Python tag, which gives the same tags, more slowly.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("loadbalancer._gmac", ["loadbalancer/_gmac.c"],
                             libraries=["crypto"], optional=True)])
