"""The quickstart's world: a small encyclopedia (countries, chemical elements) and instructions that need no lookup.

Everything the quickstart trains and evaluates on is generated here, deterministically, from two fact tables
written for this project: one passage per entity (the retrieval corpus), factual questions whose answer is in
exactly one passage, and self-contained instructions (arithmetic, unit conversion, antonyms, greetings) whose
answer needs no passage. Entities are split into training and held-out sets, so the held-out questions are about
entities the generator never saw a question on (their passages are in the corpus).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# name, capital, continent, currency, official language(s) ("" when there is no single clear answer)
COUNTRIES: list[tuple[str, str, str, str, str]] = [
    ("France", "Paris", "Europe", "euro", "French"),
    ("Germany", "Berlin", "Europe", "euro", "German"),
    ("Italy", "Rome", "Europe", "euro", "Italian"),
    ("Spain", "Madrid", "Europe", "euro", "Spanish"),
    ("Portugal", "Lisbon", "Europe", "euro", "Portuguese"),
    ("the Netherlands", "Amsterdam", "Europe", "euro", "Dutch"),
    ("Austria", "Vienna", "Europe", "euro", "German"),
    ("Greece", "Athens", "Europe", "euro", "Greek"),
    ("Finland", "Helsinki", "Europe", "euro", "Finnish and Swedish"),
    ("Croatia", "Zagreb", "Europe", "euro", "Croatian"),
    ("Poland", "Warsaw", "Europe", "zloty", "Polish"),
    ("the Czech Republic", "Prague", "Europe", "koruna", "Czech"),
    ("Hungary", "Budapest", "Europe", "forint", "Hungarian"),
    ("Sweden", "Stockholm", "Europe", "krona", "Swedish"),
    ("Norway", "Oslo", "Europe", "krone", "Norwegian"),
    ("Denmark", "Copenhagen", "Europe", "krone", "Danish"),
    ("Switzerland", "Bern", "Europe", "Swiss franc", "German, French, Italian and Romansh"),
    ("the United Kingdom", "London", "Europe", "pound sterling", "English"),
    ("Romania", "Bucharest", "Europe", "leu", "Romanian"),
    ("Iceland", "Reykjavik", "Europe", "krona", "Icelandic"),
    ("Ukraine", "Kyiv", "Europe", "hryvnia", "Ukrainian"),
    ("Turkey", "Ankara", "Asia", "lira", "Turkish"),
    ("Japan", "Tokyo", "Asia", "yen", "Japanese"),
    ("China", "Beijing", "Asia", "renminbi", "Mandarin Chinese"),
    ("India", "New Delhi", "Asia", "rupee", "Hindi and English"),
    ("South Korea", "Seoul", "Asia", "won", "Korean"),
    ("Thailand", "Bangkok", "Asia", "baht", "Thai"),
    ("Vietnam", "Hanoi", "Asia", "dong", "Vietnamese"),
    ("the Philippines", "Manila", "Asia", "peso", "Filipino and English"),
    ("Malaysia", "Kuala Lumpur", "Asia", "ringgit", "Malay"),
    ("Pakistan", "Islamabad", "Asia", "rupee", "Urdu and English"),
    ("Bangladesh", "Dhaka", "Asia", "taka", "Bengali"),
    ("Nepal", "Kathmandu", "Asia", "rupee", "Nepali"),
    ("Iran", "Tehran", "Asia", "rial", "Persian"),
    ("Saudi Arabia", "Riyadh", "Asia", "riyal", "Arabic"),
    ("Mongolia", "Ulaanbaatar", "Asia", "tugrik", "Mongolian"),
    ("Kazakhstan", "Astana", "Asia", "tenge", "Kazakh"),
    ("Egypt", "Cairo", "Africa", "Egyptian pound", "Arabic"),
    ("Morocco", "Rabat", "Africa", "dirham", "Arabic and Berber"),
    ("Kenya", "Nairobi", "Africa", "Kenyan shilling", "Swahili and English"),
    ("Nigeria", "Abuja", "Africa", "naira", "English"),
    ("Ethiopia", "Addis Ababa", "Africa", "birr", "Amharic"),
    ("Ghana", "Accra", "Africa", "cedi", "English"),
    ("Tanzania", "Dodoma", "Africa", "Tanzanian shilling", "Swahili"),
    ("Algeria", "Algiers", "Africa", "Algerian dinar", "Arabic and Berber"),
    ("Senegal", "Dakar", "Africa", "CFA franc", "French"),
    ("Canada", "Ottawa", "North America", "Canadian dollar", "English and French"),
    ("Mexico", "Mexico City", "North America", "Mexican peso", "Spanish"),
    ("Cuba", "Havana", "North America", "Cuban peso", "Spanish"),
    ("Brazil", "Brasilia", "South America", "real", "Portuguese"),
    ("Argentina", "Buenos Aires", "South America", "Argentine peso", "Spanish"),
    ("Chile", "Santiago", "South America", "Chilean peso", "Spanish"),
    ("Peru", "Lima", "South America", "sol", "Spanish"),
    ("Colombia", "Bogota", "South America", "Colombian peso", "Spanish"),
    ("Venezuela", "Caracas", "South America", "bolivar", "Spanish"),
    ("Australia", "Canberra", "Oceania", "Australian dollar", "English"),
    ("New Zealand", "Wellington", "Oceania", "New Zealand dollar", "English and Maori"),
]

# name, symbol, atomic number, one fact in a short clause
ELEMENTS: list[tuple[str, str, int, str]] = [
    ("Hydrogen", "H", 1, "it is the lightest and most abundant element in the universe"),
    ("Helium", "He", 2, "it is a noble gas used to fill balloons"),
    ("Lithium", "Li", 3, "it is a soft metal used in rechargeable batteries"),
    ("Carbon", "C", 6, "it forms the backbone of the molecules of life"),
    ("Nitrogen", "N", 7, "it makes up most of the air we breathe"),
    ("Oxygen", "O", 8, "it is needed by animals for respiration"),
    ("Fluorine", "F", 9, "it is the most reactive of all elements"),
    ("Neon", "Ne", 10, "it glows red-orange in advertising signs"),
    ("Sodium", "Na", 11, "it is a soft metal that reacts violently with water"),
    ("Magnesium", "Mg", 12, "it burns with a bright white flame"),
    ("Aluminium", "Al", 13, "it is a light metal used in cans and aircraft"),
    ("Silicon", "Si", 14, "it is the main material of computer chips"),
    ("Phosphorus", "P", 15, "it is found in DNA and in matches"),
    ("Sulfur", "S", 16, "it is a yellow solid that smells when burned"),
    ("Chlorine", "Cl", 17, "it is used to disinfect swimming pools"),
    ("Argon", "Ar", 18, "it is a noble gas used in light bulbs"),
    ("Potassium", "K", 19, "it is an essential nutrient found in bananas"),
    ("Calcium", "Ca", 20, "it makes bones and teeth strong"),
    ("Iron", "Fe", 26, "it is the main component of steel"),
    ("Nickel", "Ni", 28, "it is used in coins and stainless steel"),
    ("Copper", "Cu", 29, "it is a reddish metal that conducts electricity well"),
    ("Zinc", "Zn", 30, "it is used to galvanize steel against rust"),
    ("Silver", "Ag", 47, "it has the highest electrical conductivity of any metal"),
    ("Tin", "Sn", 50, "it is mixed with copper to make bronze"),
    ("Gold", "Au", 79, "it is a dense precious metal that does not rust"),
    ("Mercury", "Hg", 80, "it is a metal that is liquid at room temperature"),
    ("Lead", "Pb", 82, "it is a heavy metal once used in water pipes"),
    ("Uranium", "U", 92, "it is used as fuel in nuclear power plants"),
]

HELD_OUT_COUNTRIES = {"Portugal", "Hungary", "Norway", "Japan", "Vietnam", "Kenya", "Peru", "Canada", "Iran", "Ghana"}
HELD_OUT_ELEMENTS = {"Helium", "Sodium", "Copper", "Gold", "Chlorine"}


@dataclass(frozen=True)
class Question:
    """A factual question, the entity (= passage title) that answers it, and the answer."""

    question: str
    title: str
    answer: str
    output: str  # the reference answer sentence


@dataclass(frozen=True)
class Instruction:
    """A self-contained instruction and its reference output: no passage helps."""

    instruction: str
    output: str


def title_of(name: str) -> str:
    """Passage titles drop the article: "the Netherlands" -> "Netherlands"."""
    return name[4:] if name.startswith("the ") else name


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def passages() -> list[dict[str, str]]:
    """The corpus, in the DPR TSV fields (`id`, `title`, `text`): one passage per country and per element."""
    out = []
    for name, capital, continent, currency, language in COUNTRIES:
        text = (
            f"{cap(name)} is a country in {continent}. Its capital city is {capital}. "
            f"The currency of {name} is the {currency}. The official language of {name} is {language}."
        )
        out.append({"title": title_of(name), "text": text})
    for name, symbol, number, fact in ELEMENTS:
        text = (
            f"{name} is a chemical element with the symbol {symbol} and atomic number {number}. "
            f"In everyday life, {fact}."
        )
        out.append({"title": name, "text": text})
    return [{"id": str(i + 1), **p} for i, p in enumerate(out)]


def country_questions(name: str, capital: str, continent: str, currency: str, language: str) -> list[Question]:
    t = title_of(name)
    return [
        Question(f"What is the capital of {name}?", t, capital, f"The capital of {name} is {capital}."),
        Question(f"Which city is the capital of {name}?", t, capital, f"{capital} is the capital of {name}."),
        Question(f"What currency is used in {name}?", t, currency, f"The currency of {name} is the {currency}."),
        Question(f"On which continent is {name}?", t, continent, f"{cap(name)} is in {continent}."),
        Question(
            f"What is the official language of {name}?", t, language, f"The official language of {name} is {language}."
        ),
    ]


def element_questions(name: str, symbol: str, number: int, fact: str) -> list[Question]:
    return [
        Question(
            f"What is the chemical symbol of {name.lower()}?",
            name,
            symbol,
            f"The symbol of {name.lower()} is {symbol}.",
        ),
        Question(
            f"What is the atomic number of {name.lower()}?",
            name,
            str(number),
            f"The atomic number of {name.lower()} is {number}.",
        ),
    ]


def questions(held_out: bool) -> list[Question]:
    """Factual questions about the training entities (held_out=False) or the held-out ones."""
    out = []
    for row in COUNTRIES:
        if (row[0] in HELD_OUT_COUNTRIES) == held_out:
            out += country_questions(*row)
    for row in ELEMENTS:
        if (row[0] in HELD_OUT_ELEMENTS) == held_out:
            out += element_questions(*row)
    return out


ANTONYMS = [
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("early", "late"),
    ("open", "closed"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("young", "old"),
    ("loud", "quiet"),
    ("full", "empty"),
    ("hard", "soft"),
    ("wet", "dry"),
    ("high", "low"),
    ("clean", "dirty"),
    ("long", "short"),
    ("thick", "thin"),
]
NAMES = ["Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Lena", "Omar"]


def instructions(held_out: bool, seed: int = 0) -> list[Instruction]:
    """Instructions answered without any passage; the held-out set uses other numbers (61-99, 41-99 km), words and
    names."""
    rng = random.Random(seed + (1000 if held_out else 0))
    out = []
    for _ in range(12 if held_out else 100):
        a, b = (rng.randint(61, 99), rng.randint(61, 99)) if held_out else (rng.randint(2, 60), rng.randint(2, 60))
        out.append(Instruction(f"What is {a} plus {b}?", f"{a} plus {b} equals {a + b}."))
    for _ in range(6 if held_out else 60):
        n = rng.randint(41, 99) if held_out else rng.randint(2, 40)
        out.append(Instruction(f"Convert {n} kilometers to meters.", f"{n} kilometers is {n * 1000} meters."))
    words = ANTONYMS[12:] if held_out else ANTONYMS[:12]
    for word, opposite in words:
        out.append(
            Instruction(f"What is the opposite of the word '{word}'?", f"The opposite of '{word}' is '{opposite}'.")
        )
    for name in NAMES[9:] if held_out else NAMES[:9]:
        out.append(Instruction(f"Write a short greeting for {name}.", f"Hello {name}, it is nice to see you!"))
        out.append(
            Instruction(f"Write a polite thank-you note to {name}.", f"Dear {name}, thank you very much for your help.")
        )
    return out
