"""Small curated word lists for the kinds fiction needs (:mod:`.kinds`): the words that tell a term's kind from
its context, and the ordinary substitutes of each kind. WordNet is not used: its data does not install from the
package index; Faker and wordfreq give names, places and frequencies, these lists the rest.

Every substitute list holds ordinary, modern English words of one kind, singular (plurals are made by
:func:`plural`); a term's substitutes are drawn from the list of its kind (rule S1 of :mod:`.kinds`)."""

from __future__ import annotations

# ---- cues ----------------------------------------------------------------------------------------------------
# Verbs whose subject is a speaker or an animate agent (rule K1): "said Alice", "the Lion roared".
SPEECH_VERBS = frozenset("""said says asked replied answered cried exclaimed whispered shouted called muttered murmured
returned continued added remarked observed began repeated screamed groaned sobbed protested insisted explained
interrupted declared demanded inquired enquired went-on thundered growled roared snapped panted gasped""".split())
ACTION_VERBS = frozenset("""nodded smiled laughed sighed thought wept grinned frowned looked turned walked ran sat stood
knew felt wanted wished told saw heard spoke came went took gave stared shook rose jumped hurried seemed tried
opened closed put held made got lay waited whispered listened watched followed raised bowed kissed hesitated
started stopped answered paused glanced shuddered trembled smiled laughed wrote read""".split())
# Verbs only animals take as subjects (rule K9): "Toto barked".
ANIMAL_VERBS = frozenset("""barked wagged yelped whined howled purred mewed miaowed meowed neighed whinnied bleated
brayed mooed grunted squeaked chirped chirruped cawed croaked hissed snarled pounced sniffed trotted galloped
flapped pecked hooted""".split())
# Prepositions of place (rule K4): strong ones almost never precede a person's name.
PLACE_PREPS = frozenset("in at into inside within through across near towards toward outside throughout".split())
WEAK_PLACE_PREPS = frozenset("to from".split())
# Pronouns after a mention (rule K3).
# Object forms ("him", "her", "them") are left out: they often refer to someone else than the subject.
PRONOUNS = {"he": "m", "his": "m", "himself": "m", "she": "f", "herself": "f", "it": "n", "its": "n", "itself": "n",
            "they": "p", "their": "p", "themselves": "p"}
# Fiction kinds by the words around a mention (rules K10-K13).
GAME_CUES = frozenset("play played playing plays game games match matches team teams pitch player players".split())
SPELL_CUES = frozenset("cast casting casts spell spells charm charms curse curses incantation hex jinx".split())
# ("teacher", "professor" are left out: "Professor Moriarty" is a person)
SUBJECT_CUES = frozenset("lesson lessons class classes study studies studying exam exams".split())
EVENT_CUES = frozenset("during festival feast ball celebration ceremony battle war tournament anniversary".split())

# Head words of multi-word terms, by kind (rule K8): "Emerald City" is a place, "Golden Cap" an object.
PLACE_HEADS = frozenset("""city town village land country kingdom castle palace room hall house street road lane
square hill hills mountain mountains pass river lake sea bay pier heath gardens garden church abbey chapel forest
wood woods valley court crescent park station bridge gate gates tower island cottage lodge manor asylum cemetery
churchyard inn hotel harbour harbor port cliff cliffs moor desert field fields mill farm shop market quay dock
docks terrace place row walk grove wharf beeches pool pond""".split())
PLACE_FIRST = frozenset("castle mount lake port fort cape isle".split())
ORG_HEADS = frozenset("""company society league club bank army guild council ministry school college university order
brotherhood firm office department association institute academy house""".split()) - {"house"}
TITLE_HEADS = frozenset("""journal diary gazette times post book letter letters memorandum news chronicle telegraph
herald magazine review record notebook""".split())
OBJECT_HEADS = frozenset("""cap hat shoes shoe boots slippers ring wafer stone sword wand cup crown box key necklace
cloak coat mirror lamp book map potion locket amulet bracelet brooch chain belt gem jewel coronet carbuncle
whistle horn bell basket bottle knife dagger shield spear staff rod oil soup""".split())
EVENT_HEADS = frozenset("war battle ball festival feast fair tournament wedding ceremony games match day".split())
GAME_HEADS = frozenset("game sport".split())
SPELL_HEADS = frozenset("curse charm spell hex jinx incantation".split())
SUBJECT_HEADS = frozenset("studies lessons class".split())

# Class nouns of named things (rule K15): "his Kukri knife", "the ship Demeter".
THING_CLASS_NOUNS = frozenset("""ship ships boat vessel schooner steamer brig yacht barque knife knives rifle rifles
gun guns pistol sword dagger blade carriage coach cart wagon train engine stone gem jewel ring potion book
scroll""".split())
# Nouns of animals and creatures (rule K9). A term that is one of these ("the Lion", "Dormouse") is a creature.
ANIMALS = frozenset("""lion tiger bear wolf fox dog puppy cat kitten mouse rat rabbit hare squirrel badger otter
beaver deer stag horse pony donkey mule cow bull ox sheep lamb goat pig boar monkey ape baboon elephant camel
zebra leopard panther jaguar cheetah wildcat lynx hyena jackal bat mole hedgehog tortoise turtle frog toad lizard
snake serpent crocodile alligator dragon griffin gryphon unicorn eagle eaglet hawk falcon owl crow raven rook
magpie sparrow robin wren swallow pigeon dove duck goose swan stork crane heron parrot lory dodo ostrich peacock
hen chicken cock rooster fish shark whale dolphin porpoise seal walrus lobster crab oyster whiting salmon trout
eel spider bee wasp ant beetle butterfly moth caterpillar worm snail slug dormouse guinea-pig kangaroo flamingo
pelican gull albatross vulture bison buffalo moose elk hound mastiff terrier spaniel poodle collie stallion mare
foal calf puppy cub mouse mice geese""".split())

# Role nouns used as a character's name ("the Hatter", "the Woodman"): a person, substituted by a role noun.
ROLE_WORDS = frozenset("""witch wizard king queen knave duchess duke hatter footman woodman scarecrow guardian
soldier captain doctor professor guard gatekeeper cook gardener executioner judge juror jurymen juryman
steersman coachman driver sailor mate boy girl man woman lady lord count countess prince princess emperor
empress sultan governor mayor sheriff keeper porter servant maid nurse tinsmith tinsmiths""".split())

# ---- substitutes (rule S1) ------------------------------------------------------------------------------------
CREATURES = ("badger", "otter", "beaver", "heron", "weasel", "ferret", "falcon", "pheasant", "mole", "hedgehog",
             "goat", "donkey", "pony", "sparrow", "finch", "robin", "magpie", "raven", "squirrel", "stoat",
             "moose", "walrus", "kingfisher", "woodpecker", "crane", "swan", "bison", "camel", "llama", "koala",
             "gecko", "newt", "toad", "salamander", "lynx", "marten", "panda", "meerkat", "penguin", "puffin",
             "seal", "hamster", "gerbil", "tortoise", "parrot", "pelican", "vole", "shrew", "buffalo", "gazelle")
PET_NAMES = ("Buddy", "Rex", "Rover", "Fido", "Patch", "Sooty", "Biscuit", "Pepper", "Rusty", "Lucky",
             "Shadow", "Smokey", "Bonzo", "Scamp", "Muffin", "Pickles", "Whiskers", "Socks", "Bramble",
             "Noodle", "Pip", "Sparky", "Tiger", "Ginger", "Nibbles", "Snowy", "Bouncer", "Skipper", "Pudding",
             "Bruno", "Duke", "Scout", "Rascal", "Tinker", "Buster", "Chester", "Toffee", "Nugget", "Dusty")
OBJECTS = ("lamp", "ribbon", "basket", "kettle", "lantern", "mirror", "candle", "blanket", "button", "bucket",
           "compass", "whistle", "teapot", "umbrella", "wallet", "satchel", "thimble", "spoon", "ladle",
           "hammer", "brush", "comb", "locket", "bracelet", "brooch", "scarf", "glove", "mitten", "pebble",
           "marble", "tray", "jug", "vase", "clock", "trumpet", "drum", "fiddle", "flute", "pillow", "quilt",
           "rug", "saucer", "cushion", "bell", "badge", "medal", "ladder", "rope", "cart", "wagon")
GAMES = ("Cricket", "Football", "Tennis", "Rugby", "Hockey", "Croquet", "Golf", "Polo", "Bowls", "Darts",
         "Checkers", "Billiards", "Badminton", "Baseball", "Netball", "Lacrosse", "Volleyball", "Handball",
         "Rounders", "Skittles")
SPELLS = ("Stun", "Freeze", "Vanish", "Shield", "Unlock", "Levitate", "Silence", "Dazzle", "Mend", "Summon",
          "Shrink", "Swell", "Blind", "Bind", "Scatter", "Soothe", "Blink", "Brighten", "Dim", "Lull")
SUBJECTS = ("History", "Chemistry", "Botany", "Astronomy", "Geography", "Latin", "Music", "Drawing", "Arithmetic",
            "Algebra", "Geometry", "Biology", "Physics", "Literature", "Needlework", "Philosophy", "Grammar",
            "Zoology", "Geology", "Economics")
EVENTS = ("Festival", "Carnival", "Jubilee", "Regatta", "Tournament", "Pageant", "Fair", "Gala", "Parade",
          "Harvest", "Banquet", "Reunion", "Picnic", "Masquerade", "Fete", "Convention", "Holiday", "Rally")
PEOPLES = ("villager", "islander", "highlander", "farmer", "miner", "fisherman", "weaver", "herder", "nomad",
           "shepherd", "forester", "boatman", "trapper", "settler", "hillman", "woodcutter", "potter", "smith")
NATIONALITIES = ("Dane", "Swede", "Pole", "Finn", "Czech", "Greek", "Norwegian", "Belgian", "Austrian", "Serb",
                 "Croat", "Latvian", "Estonian", "Portuguese", "Hungarian", "Bulgarian", "Lithuanian", "Icelander",
                 "Welshman", "Scot")
# Roles that are also common surnames: either reading is a person's name.
ROLES = ("Baker", "Tailor", "Miller", "Farmer", "Sailor", "Porter", "Weaver", "Hunter", "Fisher", "Shepherd",
         "Carpenter", "Butler", "Cook", "Gardener", "Mason", "Potter", "Thatcher", "Cooper", "Fletcher", "Glover",
         "Chandler", "Draper", "Brewer", "Saddler", "Skinner", "Tanner", "Turner", "Waller", "Webster", "Barber")
# First names given to either sex (the neutral choice when the book tells no gender; rule G3).
UNISEX_NAMES = ("Alex", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Robin", "Sam", "Charlie",
                "Jesse", "Avery", "Quinn", "Rowan", "Sasha", "Dana", "Kit", "Jody", "Ashley", "Drew", "Frankie",
                "Hayden", "Reese", "Sidney", "Emerson", "Kendall", "Lee", "Skyler", "Blair", "Ellis")
# Ordinary adjectives for a modifier of a creature/object term that is itself target-specific.
ADJECTIVES = ("Black", "Grey", "Brown", "Spotted", "Little", "Old", "Tall", "Striped", "Silver", "Golden", "Red",
              "Green", "Blue", "White", "Great", "Small", "Wild", "Quiet", "Proud", "Clever")

TITLES = ("Gazette", "Herald", "Chronicle", "Courier", "Observer", "Review", "Journal", "Diary", "Notebook",
          "Almanac", "Bulletin", "Digest", "Ledger", "Register", "Record", "Letters")
POOLS = {"creature": CREATURES, "pet": PET_NAMES, "object": OBJECTS, "game": GAMES, "spell": SPELLS,
         "subject": SUBJECTS, "event": EVENTS, "people": PEOPLES, "nationality": NATIONALITIES, "role": ROLES,
         "title": TITLES}


def plural(word: str) -> str:
    """English plural of a list word ("fisherman" -> "fishermen", "pony" -> "ponies", "Swede" -> "Swedes")."""
    low = word.lower()
    if low.endswith("man"):
        return word[:-3] + ("men" if word[-3:].islower() else "MEN")
    if low in ("sheep", "fish", "deer", "moose", "bison", "portuguese", "swiss"):
        return word
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def singulars(word: str) -> list[str]:
    """Every singular a plural may come from ("Walruses" -> "Walruse", "Walrus"; "Mice" stays)."""
    out = [word, singular(word)]
    low = word.lower()
    if low.endswith("es") and len(low) > 4:
        out.append(word[:-2])
    return list(dict.fromkeys(out))


def singular(word: str) -> str:
    """The singular a plural English noun most likely comes from ("Monkeys" -> "Monkey", "mice" is left)."""
    low = word.lower()
    if low.endswith("men") and len(low) > 4:
        return word[:-3] + "man"
    if low.endswith("ies") and len(low) > 4:
        return word[:-3] + "y"
    if low.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if low.endswith("s") and not low.endswith("ss") and len(low) > 3:
        return word[:-1]
    return word
