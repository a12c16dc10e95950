# GPAW build configuration used by install.sh (GPAW_CONFIG=this file).
# GPAW's setup.py executes this file with its own defaults in scope
# (libraries = ['xc'], mpi = None, fftw = False, ...) and reads the names
# set here.  MPI (MPICH, Debian's mpich/libmpich-dev) and FFTW
# (libfftw3-dev) are used when their compiler wrapper / header exist;
# otherwise GPAW is built serial and without FFTW (install.sh prints the
# apt line).  MPICH's wrapper is named explicitly (mpicxx.mpich), so that
# another MPI's default alternatives cannot slip in.  No ScaLAPACK:
# Debian's libscalapack-mpich depends on mpi-default-bin (OpenMPI), which
# would put a second MPI on the machine; at the sizes run here it would not
# help (plain LAPACK diagonalisation).
# flake8: noqa
import os
import shutil

# GPAW adds BLAS itself only when it reads no siteconfig
libraries += ["blas"]           # Debian: libopenblas-dev provides libblas.so

_mpicxx = shutil.which("mpicxx.mpich")
if _mpicxx and os.environ.get("CIDER_GPAW_SERIAL") != "1":
    mpi = True
    compiler = _mpicxx          # GPAW 26 compiles its sources as C++17
else:
    mpi = False
    compiler = os.environ.get("CC") or "g++"

if os.path.exists("/usr/include/fftw3.h"):
    fftw = True
    libraries += ["fftw3"]
