#!/usr/bin/python3
"""Builds rules/data/names.tsv, the person-name gazetteer used by the person_name validator.

Sources (Debian packages, installed only to regenerate the file; the build never needs them):
  - python3-fake-factory (Faker, MIT): given names and surnames per locale. Its lists come from
    census and registry statistics (US Census, ONS, national name registers) for each country.
  - wamerican (public domain word list): a name that is also a lower-case English word ("will",
    "grace", "baker") is flagged 'w' so that it counts only with corroboration, and every other
    lower-case word is listed with 'w' alone, so that "Sydney Opera" or "Princess Royal" is not taken
    for a name because of its first word.
  - PLACES below (countries, US states, large cities, regions), flagged 'p': "Paris", "India" and
    "Georgia" are given names too, but alone they are far more often places.

Only names written in the scripts warden's name patterns match (ASCII, Latin-1, Latin Extended-A)
are kept, folded to lower case the way the C validator folds them.

Output: one "name<TAB>flags" line per entry, sorted; flags g = given name, s = surname,
w = a common English word, p = a place name.

Note for evaluation: the Presidio synthetic data set was generated with Faker too, so its names are
drawn from these same lists; PERSON figures on that set overstate recall on real text
(see docs/detectors.md).
"""
import importlib
import os
import sys

LOCALES = ["en_US", "en_GB", "en_NZ", "en", "de_DE", "de_AT", "de_CH", "dk_DK", "es_ES", "es_MX",
           "fr_FR", "fr_CH", "it_IT", "nl_NL", "no_NO", "sv_SE", "fi_FI", "pl_PL", "cs_CZ", "hr_HR",
           "hu_HU", "pt_BR", "pt_PT", "ro_RO", "sl_SI", "lt_LT", "lv_LV", "et_EE", "tr_TR", "id_ID",
           "tw_GH", "zh_CN", "zh_TW", "ja_JP"]
GIVEN = ["first_names", "first_names_male", "first_names_female", "first_romanized_names"]
SURNAME = ["last_names", "last_names_male", "last_names_female", "last_romanized_names"]
WORDS = "/usr/share/dict/american-english"
PLACES = """
afghanistan albania algeria america andorra angola argentina armenia australia austria azerbaijan
bahamas bahrain bangladesh barbados belarus belgium belize benin bhutan bolivia bosnia botswana brazil
brunei bulgaria burundi cambodia cameroon canada chad chile china colombia congo croatia cuba cyprus
czechia denmark djibouti dominica ecuador egypt eritrea estonia eswatini ethiopia fiji finland france
gabon gambia georgia germany ghana greece grenada guatemala guinea guyana haiti honduras hungary
iceland india indonesia iran iraq ireland israel italy jamaica japan jordan kazakhstan kenya kiribati
korea kosovo kuwait kyrgyzstan laos latvia lebanon lesotho liberia libya liechtenstein lithuania
luxembourg madagascar malawi malaysia maldives mali malta mauritania mauritius mexico micronesia
moldova monaco mongolia montenegro morocco mozambique myanmar namibia nauru nepal netherlands nicaragua
niger nigeria norway oman pakistan palau palestine panama paraguay peru philippines poland portugal
qatar romania russia rwanda samoa senegal serbia seychelles singapore slovakia slovenia somalia spain
sudan suriname sweden switzerland syria taiwan tajikistan tanzania thailand togo tonga trinidad tunisia
turkey turkmenistan tuvalu uganda ukraine uruguay uzbekistan vanuatu vatican venezuela vietnam yemen
zambia zimbabwe england scotland wales britain europe asia africa antarctica oceania arabia scandinavia
alabama alaska arizona arkansas california colorado connecticut delaware florida hawaii idaho illinois
indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan minnesota mississippi
missouri montana nebraska nevada ohio oklahoma oregon pennsylvania tennessee texas utah vermont virginia
washington wisconsin wyoming dakota carolina
london paris berlin madrid rome vienna prague warsaw budapest moscow tokyo beijing shanghai delhi mumbai
sydney melbourne toronto vancouver montreal chicago boston houston dallas austin denver phoenix seattle
atlanta miami orlando detroit brooklyn manhattan hollywood york jersey oxford cambridge dublin lisbon
athens istanbul cairo dubai jerusalem bangkok singapore seoul manila jakarta lagos nairobi johannesburg
rio lima bogota santiago havana geneva zurich milan florence venice naples barcelona seville amsterdam
brussels copenhagen stockholm oslo helsinki edinburgh glasgow manchester liverpool birmingham bristol
kyoto osaka hong kong vegas angeles francisco diego orleans arendelle asgard narnia gotham hogwarts
westeros mordor wakanda atlantis olympus
"""


def fold(name):
    out = []
    for ch in name:
        cp = ord(ch)
        if cp < 0x80:
            out.append(ch.lower())
        elif 0xC0 <= cp <= 0xDE and cp != 0xD7:
            out.append(chr(cp + 0x20))
        elif (0x100 <= cp <= 0x137) or (0x14A <= cp <= 0x177):
            out.append(chr(cp | 1))
        elif ((0x139 <= cp <= 0x148) or (0x179 <= cp <= 0x17E)) and cp & 1:
            out.append(chr(cp + 1))
        elif cp == 0x178:
            out.append("\u00ff")
        elif cp <= 0x17F:
            out.append(ch)
        else:
            return None
    return "".join(out)


def names_of(attr):
    if attr is None:
        return []
    if isinstance(attr, dict):
        return list(attr.keys())
    return list(attr)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "rules", "data", "names.tsv")
    flags = {}
    for loc in LOCALES:
        try:
            mod = importlib.import_module("faker.providers.person." + loc)
        except ImportError:
            continue
        prov = mod.Provider
        for attrs, flag in ((GIVEN, "g"), (SURNAME, "s")):
            for a in attrs:
                for n in names_of(getattr(prov, a, None)):
                    for part in n.replace("-", " ").split():
                        f = fold(part.strip(".'"))
                        if not f or len(f) < 2 or len(f.encode()) > 60 or not f[0].isalpha():
                            continue
                        flags.setdefault(f, set()).add(flag)
    words = set()
    with open(WORDS, encoding="utf-8") as fh:
        for w in fh:
            w = w.strip()
            if w and w.islower() and w.isalpha() and len(w) >= 2:
                words.add(w)
    for w in words:
        flags.setdefault(w, set())
    for pl in PLACES.split():
        flags.setdefault(pl, set()).add("p")
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write("# person-name gazetteer: name<TAB>flags (g given, s surname, w common English word)\n")
        fh.write("# generated by tests/eval/make_gazetteer.py from Faker's per-locale name lists\n")
        for n in sorted(flags):
            fl = "".join(sorted(flags[n] - {"p"}))
            if n in words:
                fl += "w"
            if "p" in flags[n]:
                fl += "p"
            fh.write(n + "\t" + fl + "\n")
    print("%d names -> %s" % (len(flags), out_path))


if __name__ == "__main__":
    main()
