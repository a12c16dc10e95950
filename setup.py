from setuptools import setup

setup(
    name="cider-xc",
    version="0.1.0",
    description="Machine-learned CIDER exchange functionals for PySCF and GPAW",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["cider_xc", "cider_xc.pyscf", "cider_xc.gpaw", "cider_xc.descriptors",
              "cider_xc.training", "cider_xc.data"],
    package_dir={"cider_xc.descriptors": "descriptors",
                 "cider_xc.training": "training",
                 "cider_xc.data": "data"},
    package_data={"cider_xc.data": ["functionals/*.npz", "functionals/*.py"]},
    install_requires=["numpy>=1.23", "scipy>=1.9", "numba>=0.57", "h5py>=3.0",
                      "pyscf>=2.6,<3", "ase>=3.22"],
    extras_require={
        "train": ["scikit-learn>=1.2", "joblib>=1.3", "tqdm>=4.60", "pyyaml>=6",
                  "matplotlib>=3.6", "dask[distributed]>=2023.1"],
        "gpaw": ["gpaw>=24", "ase>=3.22"],
        "test": ["pytest>=7"],
    },
    entry_points={"console_scripts": ["cider-xc=cider_xc.cli:main"]},
)
