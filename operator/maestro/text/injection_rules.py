"""The phrase rules of `maestro.text.injection`: data only, compiled there.

Kept apart so the table can grow (a language, a phrasing) without touching the engine. A rule is a
few regex *variants* tried strongest first (the first that matches sets the score) and *anchors*:
word-start stems ("ignor" matches "ignoring"; a trailing `$` makes one a whole word). One pass of the
engine finds every anchor in the text; a rule runs only where one of its anchors is, and its variants
are tried with `match` right at the anchor, which costs a fraction of a microsecond when it fails.
So an anchor should be the rarest word of the phrase. When that word is not the first, the words
before it go into `before`: a pattern that must end exactly at the anchor, searched only in the
`back` characters before it, and only once a variant has matched there.

Patterns are written for lowercased text, `\\s+` between words, with accents where the language has
them: the engine strips accents from the text and makes an accented letter of a pattern also match
its bare form ("précédentes" matches "precedentes"), and derives the normalized layer's version of
every pattern, where "l" reads as "i" (`1`, `l`, `|` and `!` are ambiguous in leetspeak; see
`injection._skeleton`). Scores: 0.8-0.95 a phrase that is an attack on its own; 0.5-0.75 likely but
seen in benign text too; below 0.5 a weak cue that only counts together with another of its family.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERRIDE = "instruction_override"
ROLEPLAY = "roleplay_jailbreak"
EXTRACTION = "prompt_extraction"
EMBEDDED = "embedded_injection"
ENCODED = "encoded"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    family: str
    anchors: tuple[str, ...]
    variants: tuple[tuple[float, str], ...]  # (score, pattern starting at an anchor), strongest first
    before: str = ""  # what must come right before the anchor (searched back `back` characters)
    back: int = 0


def rule(
    id: str, family: str, anchors: str, *variants: tuple[float, str], before: str = "", back: int = 0
) -> Rule:
    return Rule(id, family, tuple(anchors.split()), variants, before, back or (80 if before else 0))


def A(alternatives: str) -> str:
    """`a|b|c` as a non-capturing group."""
    return f"(?:{alternatives})"


def fill(n: int) -> str:
    """Up to `n` filler words, none of them first-person ("my previous instructions" is the user's own)."""
    return r"(?:(?!(?:my|our|mine|me|his|her|their)\b)[\w'’-]+[\s,;:]+){0," + str(n) + "}"


# --- shared vocabulary (English) ----------------------------------------------------------------------

IGNORE = A(
    r"ignor(?:e|ing)|disregard(?:ing)?|forget(?:ting)?|neglect|skip|bypass|overrid(?:e|ing)|overrule|discard|"
    r"drop"
    r"|abandon|dismiss|cancel|nevermind|throw\s+(?:away|out)|disobey|unlearn|ditch|revoke|nullify|circumvent"
)
TEMPORAL = A(
    r"previous(?:ly)?|prior|above|earlier|preceding|foregoing|former|original|initial|old|existing|system"
    r"|developer'?s?|default|pre-?set|pre-?programmed|hidden"
)
QUANT = A("your|all|any|every|each")
OBJ = A(
    r"instructions?|directives?|directions?|rules?|guidelines?|prompts?|commands?|constraints?|restrictions?"
    r"|programming|polic(?:y|ies)|guardrails?|safeguards?|protocols?|limitations?|system\s+(?:prompt|message)"
    r"s?"
    r"|training"
)
LIMITS = A(
    r"restrictions?|rules|limits?|limitations?|filters?|filtering|censorship|guidelines|boundaries|ethics|mor"
    r"als"
    r"|constraints|safeguards|guardrails|polic(?:y|ies)"
)
NEW = A("new|updated|revised|real|actual|true|secret|hidden|additional|override")
AI_DIRECTED = A(
    r"you\b|your\b|ignore|disregard|forget|from\s+now|act\s+as|pretend|reveal|print|output|say\b|respond|repl"
    r"y"
    r"|answer|do\s+not|always|never|insult|write"
)
AI_NOUN = A(r"ai\b|a\.i\.|assistant|chatbot|bot\b|model\b|llm\b|gpt|chatgpt|version\s+of")
UNBOUND = A(
    r"un(?:restricted|filtered|censored|limited|bound|chained|leashed|locked|moderated|aligned|hinged)"
    r"|amoral|immoral|jailbroken"
)

# --- instruction override ---------------------------------------------------------------------------


def _ignore_rules(rule_id: str, anchors: str, verb: str, before: str) -> tuple[Rule, ...]:
    """The override phrasings after one set of verbs ("ignore", or "follow" after "do not")."""
    return (
        rule(
            rule_id,
            OVERRIDE,
            anchors,
            (
                0.92,
                verb
                + r"\s+"
                + fill(4)
                + TEMPORAL
                + r"\s+"
                + fill(2)
                + A(OBJ + r"|context|conversation")
                + r"\b",
            ),
            (
                0.88,
                verb + r"\s+(?:all\s+(?:of\s+)?)?the\s+" + fill(1) + OBJ + r"\s+"
                r"(?:above|before\s+(?:this|now)|(?:that\s+)?you\s+(?:were|have\s+been)\s+given|(?:that\s+)?y"
                r"ou\s+"
                r"(?:received|got)|given\s+(?:to\s+you|before|earlier|previously))",
            ),
            (0.85, verb + r"\s+" + fill(2) + QUANT + r"\s+" + fill(2) + OBJ + r"\b"),
            (
                0.85,
                verb + r"\s+" + QUANT + r"\s+" + fill(3) + r"(?:above|before|previous|prior|earlier)"
                r"(?=\s*(?:[.,;:!]|and\b|then\b|$))",
            ),
            before=before,
            back=24 if before else 0,
        ),
        rule(
            "override.ignore_everything",
            OVERRIDE,
            anchors,
            (
                0.88,
                verb
                + r"\s+(?:about\s+)?(?:everything|all|anything)(?:\s+(?:else|of\s+(?:this|that)))?[\s,]+"
                + A(
                    r"(?:that\s+)?(?:you(?:'ve|\s+have|\s+were|\s+had|'re|\s+are)?|was|has\s+been)\s+(?:been"
                    r"\s+)?"
                    r"(?:told|instructed|given|taught|learned|programmed|said)|above|before\s+(?:this|now|my)"
                    r"|prior"
                    r"|previously|(?:that\s+)?(?:came|comes|was\s+(?:said|written|stated))\s+(?:before|above|"
                    r"earlier)"
                    r"|(?:stated|said|written|mentioned)\s+(?:above|before|previously|earlier)"
                    r"|up\s+to\s+(?:now|this\s+point)|so\s+far"
                ),
            ),
            (
                0.85,
                verb
                + r"\s+(?:what(?:ever)?|anything)\s+(?:the\s+)?"
                + A(r"system|developers?|openai|admins?|creators?|operators?|you\s+were|they")
                + r"\s+"
                + fill(2)
                + r"(?:told|said|instructed|gave|programmed|wrote|taught)",
            ),
            (
                0.8,
                verb + r"\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:above|previous|prior|preceding|foregoing)"
                r"(?:\s+(?:text|content|input|message|prompt))?[\s,.;:]+(?:and\s+)?(?:instead\s+|now\s+|then"
                r"\s+"
                r"|just\s+)?"
                + A(
                    r"say|print|output|write|respond|reply|tell|reveal|show|translate|answer|follow|execute|l"
                    r"ist|give"
                    r"|return|repeat|insult|do"
                ),
            ),
            (0.45, verb + r"\s+(?:all\s+)?(?:of\s+)?(?:that|this|the\s+above)[\s,]+(?:and\s+)?instead\b"),
            before=before,
            back=24 if before else 0,
        ),
    )


VOID = A(
    r"void|cancel+ed|invalid|null(?:\s+and\s+void)?|obsolete|revoked|outdated|overridden|replaced|superseded"
    r"|deprecated|a\s+test|fake|lifted|suspended|disabled|irrelevant"
    r"|no\s+longer\s+(?:valid|apply|applicable|in\s+effect|active|relevant|binding)"
    r"|(?:do\s+not|don't)\s+apply(?:\s+anymore)?|not\s+(?:valid|binding)"
)
TASK = r"(?:system\s+)?(?:instructions?|directives?|rules|task|orders|prompt|objective|mission)"

_OVERRIDE_EN = (
    *_ignore_rules(
        "override.ignore_previous",
        "ignor disregard forget neglect skip bypass overrid overrul discard drop abandon dismiss cancel "
        "nevermind "
        "throw disobey unlearn ditch revok nullif circumvent",
        IGNORE,
        "",
    ),
    # "do not follow", "stop obeying", "set aside", "pay no attention to", "never mind": on the rarer word
    *_ignore_rules(
        "override.ignore_previous",
        "follow obey heed aside attention mind$",
        r"(?:follow(?:ing)?|obey(?:ing)?|heed|aside|attention\s+to|mind)",
        r"(?:do\s+not|don'?t|never|stop|no\s+longer|set|pay\s+no)\s+",
    ),
    rule(
        "override.instructions_void",
        OVERRIDE,
        "void cancel invalid null obsolete revok outdated overridden replaced superseded deprecated test$ "
        "fake "
        "lifted suspended disabled irrelevant no$ do$ don not$",
        (0.86, VOID),
        before=A(
            r"previous|prior|above|earlier|preceding|foregoing|original|initial|system|developer'?s?|your|all"
        )
        + r"\s+"
        + fill(1)
        + OBJ
        + r"\s+(?:(?:you\s+(?:were|have\s+been)\s+given|(?:given|set)\s+(?:to\s+you|before))"
        r"\s+)?(?:(?:are|is|were|have\s+been|has\s+been|now|hereby)\s+)*",
        back=90,
    ),
    rule(
        "override.instructions_void",
        OVERRIDE,
        "everything",
        (
            0.86,
            r"everything\s+(?:you\s+(?:were|have\s+been)\s+(?:told|instructed|given)|above|(?:said\s+)?before"
            r")"
            r"[^.!?\n]{0,30}?\s(?:is|are)\s+(?:now\s+)?(?:cancel+ed|void|invalid|revoked|null|obsolete)",
        ),
    ),
    rule(
        "override.new_instructions",
        OVERRIDE,
        "system instruct directiv rules task orders prompt objective mission",
        (0.85, TASK + r"\s*[:：-]\s*" + AI_DIRECTED),
        (0.6, TASK + r"\s*[:：]"),
        before=NEW + r"\s+",
        back=24,
    ),
    rule(
        "override.new_instructions",
        OVERRIDE,
        "task job goal role purpose mission objective instruct function",
        (
            0.75,
            A(r"task|job|goal|role|purpose|mission|objective|instructions?|function")
            + r"\s+(?:now\s+)?(?:is|are|will\s+be)\b",
        ),
        before=r"your\s+(?:new|real|true|actual)\s+",
        back=24,
    ),
    rule(
        "override.new_instructions",
        OVERRIDE,
        "task job goal purpose mission objective",
        (0.45, r"(?:task|job|goal|purpose|mission|objective)\s+(?:now\s+)?(?:is|will\s+be)\b"),
        before=r"your\s+(?:only|sole|one)\s+",
        back=24,
    ),
    rule(
        "override.from_now_on",
        OVERRIDE,
        "from starting as$ henceforth",
        (
            0.85,
            A(
                r"from\s+now\s+on|starting\s+(?:now|today)|as\s+of\s+(?:now|this\s+moment)|henceforth"
                r"|from\s+this\s+(?:point|moment)(?:\s+on(?:ward)?)?"
            )
            + r"[\s,]+you(?:'ll|\s+will|\s+are|'re|\s+must|\s+shall|\s+should|\s+can)?\s+[^.!?\n]{0,60}?"
            + A(
                r"ignor|disregard|no\s+longer|(?:have\s+)?no\s+"
                + LIMITS
                + r"|without\s+(?:any\s+)?"
                + LIMITS
                + r"|(?:not|never)\s+(?:follow|obey|refuse|decline)|unrestricted|unfiltered|uncensored|dan\b|"
                r"jailbr"
                r"|only\s+obey|obey\s+only|regardless\s+of"
            ),
        ),
        (
            0.4,
            A(r"from\s+now\s+on|henceforth|as\s+of\s+(?:now|this\s+moment)")
            + r"[\s,]+you(?:'ll|\s+will|'re|\s+are|\s+must|\s+shall)\b",
        ),
    ),
    rule(
        "override.disable_safety",
        OVERRIDE,
        "overrid overrul bypass circumvent disabl deactivat turn switch suspend lift remov break",
        (
            0.82,
            A(
                r"override|overrule|bypass|circumvent|disable|deactivate|turn\s+off|switch\s+off|suspend|lift"
                r"|remove|break"
            )
            + r"\s+(?:all\s+)?(?:of\s+)?(?:your|its)\s+"
            + fill(2)
            + A(OBJ + r"|filters?|censorship|alignment|ethics|morals"),
        ),
        (
            0.8,
            A(r"override|bypass|circumvent|disable|deactivate|turn\s+off|switch\s+off")
            + r"\s+(?:all\s+|any\s+)?(?:of\s+)?(?:the\s+)?(?:safety|content|ethical|moral|openai)\s+"
            + A(OBJ + r"|filters?|checks?|moderation"),
        ),
    ),
    rule(
        "override.system_override",
        OVERRIDE,
        "overrid",
        (0.8, r"override\s*[:!.]"),
        before=r"(?:system|admin|developer)\s+",
        back=16,
    ),
)

_OVERRIDE_ML = (
    rule(
        "override.ignore_previous_de",
        OVERRIDE,
        "ignorier missacht vergiss vergessen vergesst überspring übergeh verwirf verwerfen beacht befolg hör "
        "deine ihre die alle neue geändert aktualisiert echte wahre",
        (
            0.9,
            A(
                r"ignorier(?:e|en|t|st)?|missacht(?:e|en|et)?|vergiss|vergessen|vergesst|überspring(?:e|en)?"
                r"|übergeh(?:e|en)?|verwirf|verwerfen"
                r"|(?:beachte|befolge|befolgen|beachten)\s+(?:(?:sie|du)\s+)?(?:ab\s+jetzt\s+)?(?:nicht\s+meh"
                r"r|nicht|keine)"
                r"|hör\s+auf,?\s+(?:\w+\s+){0,3}?zu\s+befolgen"
            )
            + r"\s+(?:(?:sie|bitte|einfach|nun|jetzt|doch|mal|du)\s+)*"
            r"(?:(?:alle[nrs]?|sämtliche[nr]?|die|deine[nrs]?|ihre[nrs]?|jegliche[nr]?|der|den|dem)\s+)*"
            r"(?:(?:vorherigen?|vorigen?|bisherigen?|obigen?|vorangegangenen?|vorhergehenden?|früheren?|urspr"
            r"ünglichen?"
            r"|ersten?|anfänglichen?|oben\s+genannten?|obenstehenden?|alten?|gegebenen?|erhaltenen?)\s+)?"
            + A(
                r"anweisung(?:en)?|instruktion(?:en)?|regeln?|befehle?|vorgaben?|richtlinien?|anordnungen?|di"
                r"rektiven?"
                r"|systemanweisung(?:en)?|system-?prompts?|einschränkungen|beschränkungen"
            ),
        ),
        (
            0.86,
            r"vergiss\s+alles[\s,]+(?:(?:was|das)\s+(?:dir|man\s+dir|du|ich\s+dir)\s+(?:\w+\s+){0,3}?(?:gesag"
            r"t|befohlen"
            r"|aufgetragen|mitgeteilt|beigebracht|gegeben|vorgegeben|erklärt)|davor|vorher|bisherige|oben|zuv"
            r"or)",
        ),
        (
            0.86,
            r"(?:deine|ihre|die|alle)\s+(?:bisherigen|vorherigen|alten|ursprünglichen|obigen|früheren)\s+(?:a"
            r"nweisungen"
            r"|regeln|vorgaben|instruktionen|befehle|richtlinien)\s+(?:gelten|sind)\s+(?:ab\s+(?:jetzt|sofort"
            r")\s+"
            r"|jetzt\s+|nun\s+)?(?:nicht\s+mehr|ungültig|aufgehoben|hinfällig|außer\s+kraft|null\s+und\s+nich"
            r"tig|gelöscht)",
        ),
        (
            0.6,
            r"(?:neue|geänderte|aktualisierte|echte|wahre)\s+(?:anweisungen|anweisung|regeln|aufgabe|befehle|"
            r"instruktionen)\s*[:：]",
        ),
    ),
    rule(
        "override.ignore_previous_fr",
        OVERRIDE,
        "ignor oubli ne$ fais$ faites passe outrepass contourn abandonn annul laiss écart nouvel vraie",
        (
            0.9,
            A(
                r"ignore[zsr]?|ignorant|oublie[zsr]?|ne\s+(?:tiens|tenez|prends|prenez)\s+(?:plus|pas)\s+(?:e"
                r"n\s+)?compte"
                r"\s+(?:de|des|du)|(?:fais|faites)\s+abstraction\s+(?:de|des|du)|ne\s+(?:suis|suivez|respecte"
                r"|respectez"
                r"|obéis|obéissez)\s+(?:plus|pas)(?:\s+à|\s+aux)?|passe[rz]?\s+outre\s+(?:à|aux)|outrepasse[r"
                r"z]?"
                r"|contourne[rz]?|abandonne[rz]?|annule[rz]?|laisse[rz]?\s+tomber|écarte[rz]?"
            )
            + r"\s*(?:(?:toutes|tous|les|tes|vos|ces|des|de|la|le|l'|ton|votre|ta)\s*){0,3}"
            r"(?:(?:précédentes?|précédents?|anciennes?|premières?|initiales?)\s+)?"
            + A(
                r"instructions?|consignes?|règles?|directives?|ordres|commandes|indications|prompts?|restrict"
                r"ions"
                r"|limitations"
            )
            + r"\s+"
            + A(
                r"précédent(?:es|e|s)?|antérieur(?:es|e|s)?|ci-dessus|initiale?s?|originale?s?|d'origine|d'av"
                r"ant"
                r"|de\s+départ|du\s+système|système|qu'on\s+t'a|que\s+l'on\s+t'a|qu'on\s+vous\s+a|reçues"
                r"|donnée?s\s+(?:avant|auparavant|précédemment)"
            ),
        ),
        (
            0.85,
            A(r"ignore[zsr]?|oublie[zsr]?|(?:fais|faites)\s+abstraction\s+(?:de|des)")
            + r"\s*(?:toutes\s+les|tous\s+les|tes|vos|ton|votre|ta)\s+(?:(?:précédentes|anciennes|premières)"
            r"\s+)?" + A(r"instructions?|consignes?|règles?|directives?|restrictions"),
        ),
        (
            0.86,
            r"oublie[zr]?\s+tout\s+(?:ce\s+(?:qu'on|que\s+l'on|qui)\s+(?:t'a|vous\s+a)\s+(?:\w+\s+){0,2}?(?:d"
            r"it|demandé"
            r"|appris|donné|indiqué|ordonné|été\s+dit)|ce\s+qui\s+précède|ce\s+qui\s+est\s+au-dessus)",
        ),
        (
            0.6,
            r"(?:nouvelles?|vraies?)\s+(?:instructions?|consignes?|règles?|directives?|mission|tâche)\s*[:：]",
        ),
    ),
    rule(
        "override.ignore_previous_es",
        OVERRIDE,
        "ignor olvid haz$ hagan no$ deja$ descart omit anul sáltate pasa$ desobedec desestim nueva verdadera",
        (
            0.9,
            A(
                r"ignora[rd]?|ignore[ns]?|ignorá|olvida[rd]?|olvidá|olvide[ns]?|olvídate\s+de|olvídense\s+de"
                r"|(?:haz|hagan?)\s+caso\s+omiso\s+(?:a|de)|no\s+(?:sigas|sigan|siga|obedezcas|respetes|tenga"
                r"s\s+en\s+cuenta"
                r"|hagas\s+caso\s+(?:a|de))|deja\s+de\s+(?:seguir|obedecer|respetar)|descarta[r]?|omite|anula"
                r"[r]?|sáltate"
                r"|pasa\s+por\s+alto|desobedece|desestima"
            )
            + r"\s+(?:(?:todas|todos|las|los|tus|sus|el|la|de|del|esas|estas|cualquier)\s+){0,3}"
            r"(?:(?:anteriores|previas|primeras)\s+)?"
            + A(
                r"instrucciones|instrucción|reglas?|indicaciones|órdenes|directrices|directivas|normas|restri"
                r"cciones"
                r"|comandos|prompts?"
            )
            + r"\s+"
            + A(
                r"anteriores|previa?s?|previos|de\s+arriba|originales?|iniciales?|precedentes|pasadas|antigua"
                r"s"
                r"|del\s+sistema|que\s+(?:te|le)\s+(?:dieron|di|dio|han\s+dado)"
            ),
        ),
        (
            0.85,
            A(r"ignora[r]?|olvida[r]?|olvídate\s+de|deja\s+de\s+seguir|no\s+sigas")
            + r"\s+(?:todas\s+las|todos\s+los|tus|sus)\s+"
            + A(r"instrucciones|reglas|indicaciones|órdenes|directrices|normas|restricciones"),
        ),
        (
            0.86,
            r"olvida\w*\s+todo\s+lo\s+(?:que\s+(?:te|le|se\s+te)\s+(?:\w+\s+){0,2}?(?:dijeron|dije|dijo|han"
            r"\s+dicho"
            r"|ordenaron|indicaron|enseñaron|programaron)|anterior|de\s+arriba)",
        ),
        (0.6, r"(?:nuevas?|verdaderas?)\s+(?:instrucciones|reglas|órdenes|directrices|tarea|misión)\s*[:：]"),
    ),
    rule(
        "override.ignore_previous_it",
        OVERRIDE,
        "ignor dimentic non$ lascia tralascia scarta annulla trascura disattend",
        (
            0.88,
            A(
                r"ignora(?:re)?|ignorate|dimentica(?:re)?|dimenticate|dimenticati\s+(?:di|delle|dei)"
                r"|non\s+(?:seguire|segui|rispettare|obbedire)(?:\s+più)?|lascia\s+perdere|tralascia|scarta|a"
                r"nnulla"
                r"|trascura|disattendi"
            )
            + r"\s+(?:(?:tutte|tutti|le|i|gli|tue|tuoi|la|il|l'|queste|quelle)\s+){0,3}"
            + A(
                r"istruzioni|istruzione|regole|regola|indicazioni|direttive|ordini|comandi|restrizioni|limita"
                r"zioni|prompt"
            )
            + r"\s+"
            + A(
                r"precedenti|di\s+prima|sopra|originali|iniziali|ricevute(?:\s+prima)?|date\s+prima|del\s+sis"
                r"tema"
                r"|che\s+ti\s+sono\s+state\s+date"
            ),
        ),
        (
            0.85,
            A(r"ignora(?:re)?|dimentica(?:re)?|non\s+seguire(?:\s+più)?")
            + r"\s+(?:tutte\s+le|tutti\s+i|le\s+tue|i\s+tuoi)\s+"
            + A(r"istruzioni|regole|indicazioni|direttive|restrizioni"),
        ),
    ),
    rule(
        "override.ignore_previous_pt",
        OVERRIDE,
        "ignor esque desconsider desprez não$ deixe pare descarte anule pule",
        (
            0.88,
            A(
                r"ignore|ignora[r]?|ignorem|esqueça[m]?|esquece[r]?|desconsidere|desconsidera[r]?|despreze"
                r"|não\s+(?:siga|sigas|obedeça|respeite|considere)|(?:deixe|pare)\s+de\s+seguir|descarte|anul"
                r"e|pule"
            )
            + r"\s+(?:(?:todas|todos|as|os|suas|seus|tuas|teus|a|o|de|das|dos)\s+){0,3}"
            + A(r"instruções|instrução|regras?|orientações|diretrizes|ordens|comandos|restrições|prompts?")
            + r"\s+"
            + A(
                r"anteriores|prévias?|acima|originais|iniciais|de\s+antes|que\s+(?:você\s+)?(?:recebeu|lhe\s+"
                r"deram"
                r"|te\s+deram)|do\s+sistema"
            ),
        ),
        (
            0.85,
            A(r"ignore|ignora[r]?|esqueça|esquece|desconsidere")
            + r"\s+(?:todas\s+as|todos\s+os|suas|seus|as\s+suas|os\s+seus)\s+"
            + A(r"instruções|regras|orientações|diretrizes|restrições"),
        ),
        (
            0.86,
            r"esque[cç]\w*\s+tudo\s+(?:o\s+)?(?:que\s+(?:lhe|te|você)\s+(?:\w+\s+){0,2}?(?:disseram|disse|foi"
            r"\s+dito"
            r"|ensinaram|mandaram)|acima|anterior)",
        ),
    ),
    rule(
        "override.ignore_previous_nl",
        OVERRIDE,
        "negeer negeren vergeet vergeten verwerp schrap houd volg",
        (
            0.88,
            A(r"negeer|negeren|vergeet|vergeten|verwerp|schrap|houd\s+geen\s+rekening\s+met")
            + r"\s+(?:(?:alle|al|de|je|jouw|uw|die|deze)\s+){0,3}"
            r"(?:vorige|voorgaande|eerdere|bovenstaande|oorspronkelijke|originele|initiële|oude|gegeven|syste"
            r"em)\s*"
            + A(
                r"instructies|instructie|regels|regel|opdrachten|opdracht|richtlijnen|aanwijzingen|bevelen|be"
                r"perkingen"
                r"|prompts?"
            ),
        ),
        (
            0.85,
            r"(?:negeer|vergeet)\s+(?:alle|je|jouw|uw)\s+"
            + A(r"instructies|regels|opdrachten|richtlijnen|beperkingen"),
        ),
        (
            0.85,
            r"volg\s+(?:je|jouw|uw|de)\s+(?:\w+\s+)?(?:instructies|regels|opdrachten|richtlijnen)\s+niet\s+me"
            r"er",
        ),
    ),
    # й and ё also match и and е: the normalized layer strips their marks
    rule(
        "override.ignore_previous_ru",
        OVERRIDE,
        "игнорир проигнорир забудь забыть не$ перестань отбрось отмени пренебреги",
        (
            0.88,
            A(
                r"игнорир(?:уй|уйте|овать)|проигнорир(?:уй|уйте)|забудь(?:те)?|забыть|не\s+обращай(?:те)?\s+в"
                r"нимания\s+на"
                r"|не\s+следуй(?:те)?|не\s+выполняй(?:те)?|перестань\s+следовать|отбрось(?:те)?|отмени(?:те)?"
                r"|пренебреги"
            )
            + r"\s+(?:(?:все|всё|свои|твои|ваши|эти|те|любые)\s+){0,2}"
            r"(?:(?:предыдущие|прошлые|прежние|предшествующие|вышеуказанные|вышеприведённые|изначальные|исход"
            r"ные"
            r"|первоначальные|старые|системные|данные\s+ранее)\s+)?"
            + A(
                r"инструкции|инструкций|указания|указаний|правила|правил|команды|приказы|директивы|ограничени"
                r"я|промпт"
                r"|запреты"
            )
            + r"(?:\s+выше)?",
        ),
    ),
    # no word boundaries in Chinese: these anchors match anywhere
    rule(
        "override.ignore_previous_zh",
        OVERRIDE,
        "忽略 无视 忽视 不要 别管 忘记 忘掉 忘了 抛弃 放弃 跳过 不再 停止",
        (
            0.88,
            r"(?:忽略|无视|忽视|不要理会|不要理睬|别管|忘记|忘掉|忘了|抛弃|放弃|跳过|不要遵守|不要遵循|不要听从|不再遵守|停止遵守)"
            r"(?:掉)?(?:你|您)?(?:的)?(?:之前|以前|先前|此前|上面|以上|上述|前面|前述|原来|原始|最初|初始|系统|所有|全部|一切"
            r"|那些|这些|给你的|收到的|你的|您的|的|\s){1,6}(?:指令|指示|说明|规则|提示词?|命令|设定|要求|限制|约束|准则|规定)",
        ),
    ),
)

# --- prompt extraction ------------------------------------------------------------------------------

SHOW = A(
    r"reveal|print|repeat|show|output|display|tell|give|share|dump|leak|disclose|write\s+(?:out|down)|recite|"
    r"echo"
    r"|paste|copy|spell\s+out|list|expose|provide|send|return|reproduce|quote|type\s+out|read\s+(?:out|back)"
    r"|summari[sz]e|translate|what\s+(?:is|are|was|were)|what's|whats|describe|divulge|emit|post|include|stat"
    r"e"
)
ADJ_WORDS = (
    "full entire whole complete exact original initial first hidden secret current actual real verbatim raw "
    "unedited unfiltered confidential internal underlying own system starting opening"
)
ADJ = r"(?:(?:" + "|".join(ADJ_WORDS.split()) + r")\s+){0,3}"
SPECIFIC = A(
    r"system\s*-?\s*prompts?|system\s+messages?|system\s+instructions?|(?:initial|original|hidden|secret|star"
    r"ting"
    r"|opening|confidential|internal|underlying)\s+(?:prompts?|instructions?|rules|directives|guidelines|mess"
    r"ages?)"
    r"|pre-?prompts?|meta-?prompts?|developer\s+(?:message|prompt|instructions?)|configuration\s+prompt"
    r"|(?:full|exact|entire|whole|complete)\s+(?:prompt|instructions)"
)
GENERIC = A(r"instructions?|prompts?|directives?|configuration|programming|initiali[sz]ation")
# the object of "reveal your ...": what it may start with
OBJECT_ANCHORS = (
    ADJ_WORDS
    + " prompt preprompt metaprompt pre$ meta$ instruct directiv configur programming initiali developer"
)
ASK = (
    SHOW + r"\s+(?:(?:me|us)\s+)?(?:back\s+)?(?:again\s+)?"
    r"(?:(?:a\s+copy|the\s+(?:full\s+|entire\s+|complete\s+|exact\s+)?(?:text|content|contents|wording))\s+of"
    r"\s+)?"
)
VERBS_OF_COPYING = (
    r"repeat(?:ing)?|print|output|copy|echo|reproduce|write|show|display|return|type|paste|recite|quote|dump"
)
GIVEN = r"(?:given|told|provided|sent|received|configured\s+with|initiali[sz]ed\s+with|trained\s+with)"

_EXTRACTION_EN = (
    rule(
        "extraction.system_prompt",
        EXTRACTION,
        OBJECT_ANCHORS,
        (0.9, ADJ + A(SPECIFIC + "|" + GENERIC)),
        before=ASK + r"your\s+",
    ),
    rule(
        "extraction.system_prompt",
        EXTRACTION,
        OBJECT_ANCHORS,
        (0.78, ADJ + SPECIFIC),
        before=ASK + r"(?:the|all|any)\s+",
    ),
    rule(
        "extraction.system_prompt",
        EXTRACTION,
        ADJ_WORDS + " rules guidelin",
        (0.45, ADJ + r"(?:rules|guidelines)\b"),
        before=SHOW + r"\s+(?:(?:me|us)\s+)?(?:all\s+)?your\s+",
    ),
    rule(
        "extraction.what_were_you_told",
        EXTRACTION,
        "told instructed given programmed configured asked primed",
        (
            0.86,
            r"(?:told|instructed|given|programmed|configured|asked|primed)\b[^.?!\n]{0,40}?(?:before|prior\s+"
            r"to"
            r"|at\s+the\s+(?:start|beginning)|initially|originally|earlier|first)",
        ),
        before=r"what\s+(?:exactly\s+)?(?:were|was|have|had|did)\s+(?:you\s+)?(?:been\s+)?",
        back=40,
    ),
    rule(
        "extraction.what_were_you_told",
        EXTRACTION,
        "instruct rules prompt directiv guidelin",
        (
            0.82,
            r"(?:instructions?|rules|prompts?|directives|guidelines)\s+(?:were|have|had|did)\s+you\s+(?:been"
            r"\s+)?"
            r"(?:given|receive[sd]?|get|got|told|provided|initiali[sz]ed\s+with|configured\s+with|started\s+w"
            r"ith"
            r"|primed\s+with|set\s+up\s+with)",
        ),
        before=r"(?:what|which)\s+(?:\w+\s+)?",
        back=30,
    ),
    rule(
        "extraction.what_were_you_told",
        EXTRACTION,
        "system initial developer preprompt pre$ hidden",
        (
            0.82,
            r"(?:system\s+(?:message|prompt)|initial\s+prompt|developer\s+message|pre-?prompt|hidden\s+prompt"
            r")\s+"
            r"(?:say|contain|state|tell)",
        ),
        before=r"what\s+(?:did|does)\s+(?:the|your)\s+",
        back=24,
    ),
    rule(
        "extraction.what_were_you_told",
        EXTRACTION,
        "developer creator operator owner admin openai company system",
        (
            0.8,
            r"(?:developers?|creators?|operators?|owners?|admins?|openai|company|system)\s+(?:\w+\s+){0,2}?"
            r"(?:told|instructed|asked|programmed|said\s+to|gave)\s+(?:to\s+)?you",
        ),
        before=r"what\s+(?:your|the)\s+",
        back=16,
    ),
    rule(
        "extraction.what_were_you_told",
        EXTRACTION,
        "instruct rules directiv prompt",
        (
            0.82,
            r"(?:instructions?|rules|directives|prompts?)\s+(?:that\s+)?you(?:'ve|\s+have|\s+were|\s+had)?\s+"
            r"(?:been\s+)?"
            r"(?:given|received|told|provided|sent)\b[^.?!\n]{0,40}?(?:before|prior\s+to|at\s+the\s+(?:start|"
            r"beginning)"
            r"|initially|originally|earlier|first|by\s+(?:your\s+)?(?:developers?|openai|the\s+system))",
        ),
    ),
    rule(
        "extraction.repeat_above",
        EXTRACTION,
        "above before",
        (0.94, r"(?:above|before)\s+(?:\w+\s+){0,2}?(?:starting|beginning)\s+with"),
        before=A(VERBS_OF_COPYING)
        + r"\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:(?:text|words|content|contents|lines"
        r"|instructions|everything|prompt|sentences?)\s+)?",
        back=60,
    ),
    rule(
        "extraction.repeat_above",
        EXTRACTION,
        "above before preceding prior",
        (
            0.82,
            r"(?:above|before|preceding|prior\s+to)\s*"
            + A(
                r"this\b|my\b|the\s+(?:first|user|previous)|these\b|here\b|verbatim|word\s+for\s+word|exactly"
                r"|in\s+full|$|[.!,;:]"
            ),
        ),
        before=A(VERBS_OF_COPYING)
        + r"\s+(?:out\s+|back\s+)?"
        + A(
            r"everything|all(?:\s+of)?(?:\s+the\s+(?:text|words|content|messages))?"
            r"|the\s+(?:\w+\s+)?(?:text|words|content|contents|instructions|prompt|messages)"
        )
        + r"\s+(?:that\s+(?:appears?|is|was|came|comes)\s+)?",
        back=70,
    ),
    rule(
        "extraction.repeat_above",
        EXTRACTION,
        "above before",
        (0.7, r"(?:above|before)\s+(?:this|my)\s+(?:line|message|prompt|question|point)\b"),
        before=r"(?:everything|all\s+(?:the\s+)?text)\s+(?:that\s+(?:appears?|is|was|came)\s+)?",
        back=40,
    ),
    rule(
        "extraction.instructions_given",
        EXTRACTION,
        "given told provided sent received configured initiali trained",
        (0.84, GIVEN),
        before=A(
            r"repeat|print|output|show|display|reveal|list|recite|share|tell|quote|reproduce|give|dump|echo|p"
            r"aste"
            r"|copy|write\s+out"
        )
        + r"\s+(?:(?:me|us)\s+)?(?:all\s+|every\s+|each\s+)?(?:of\s+)?(?:the|your|all\s+the)?\s*"
        r"(?:exact\s+|full\s+|original\s+)?"
        + A(r"instructions?|prompt|rules|text|message|directives")
        + r"\s+(?:that\s+)?you(?:'ve|\s+have|\s+were|\s+had)?\s+(?:been\s+)?",
        back=100,
    ),
    rule(
        "extraction.instructions_given",
        EXTRACTION,
        "begin start open",
        (
            0.8,
            r"(?:begin|start|open)\s+your\s+(?:reply|response|answer|message)\s+(?:\w+\s+){0,3}?(?:your|the)"
            r"\s+"
            r"(?:system\s+prompt|instructions|initial\s+prompt|hidden\s+instructions|pre-?prompt)",
        ),
    ),
    rule(
        "extraction.instructions_given",
        EXTRACTION,
        "content text wording",
        (
            0.82,
            r"(?:contents?|text|wording)\s+of\s+your\s+(?:system\s+(?:prompt|message)|initial\s+prompt|instru"
            r"ctions"
            r"|pre-?prompt|hidden\s+instructions|developer\s+message)",
        ),
    ),
)

_EXTRACTION_ML = (
    rule(
        "extraction.system_prompt_de",
        EXTRACTION,
        "zeig gib$ nenne verrate wiederhole sag$ schreib drucke liste offenbare enthülle kopiere anweisung "
        "instruktion vorgaben regeln",
        (
            0.88,
            A(
                r"zeig(?:e|en)?|gib|nenne|verrate|wiederhole|sag|schreib|schreibe|drucke|liste|offenbare|enth"
                r"ülle|kopiere"
            )
            + r"\s+(?:mir\s+|uns\s+)?(?:bitte\s+)?(?:einmal\s+)?"
            + A(
                r"(?:deine[nmrs]?|dein|ihre[nmrs]?|ihr)\s+(?:\w+\s+){0,2}?(?:system-?prompts?|systemanweisung"
                r"en"
                r"|system-?nachricht|anweisungen|instruktionen|anfangsanweisungen|vorgaben|prompt|befehle)"
                r"|(?:den|die|das|alle)\s+(?:\w+\s+){0,2}?(?:system-?prompts?|systemanweisungen|system-?nachr"
                r"icht"
                r"|(?:ursprünglichen|anfänglichen|versteckten|geheimen|initialen)\s+(?:anweisungen|instruktio"
                r"nen))"
            ),
        ),
        (
            0.84,
            r"(?:wiederhole|gib|kopiere|zeige?|schreib)\s+(?:\w+\s+){0,3}?(?:text|alles|inhalt|wörter)\s+(?:ü"
            r"ber|oberhalb"
            r"|vor)\s+(?:dieser|meiner|der\s+ersten)",
        ),
        (
            0.8,
            r"(?:anweisungen|instruktionen|vorgaben|regeln)[\s,]+die\s+(?:du|dir)\s+(?:\w+\s+){0,4}?(?:erhalt"
            r"en|bekommen"
            r"|gegeben\s+wurden|gegeben\s+hat|gesagt\s+wurden)",
        ),
    ),
    rule(
        "extraction.system_prompt_fr",
        EXTRACTION,
        "montre affiche révèle révélez donne répète répétez écris recopie dévoile dis$ dites imprime liste "
        "copie "
        "divulgue quelles instructions consignes règles directives contenu texte réécris",
        (
            0.88,
            A(
                r"montre|montrez|affiche|affichez|révèle|révélez|donne|donnez|répète|répétez|écris|recopie|re"
                r"copiez"
                r"|dévoile|dis|dites|imprime|liste|copie|divulgue"
            )
            + r"[\s-]*(?:moi\s+|nous\s+)?"
            + A(
                r"(?:tes|ton|ta|vos|votre)\s+(?:\w+\s+){0,2}?(?:prompt|instructions?|consignes|règles|directi"
                r"ves"
                r"|message\s+système)|(?:le|la|les|l')\s*(?:\w+\s+){0,2}?(?:prompt\s+(?:système|initial|d'ori"
                r"gine)"
                r"|message\s+système|instructions?\s+(?:système|initiales|d'origine|cachées|secrètes|de\s+dép"
                r"art"
                r"|originales)|consignes\s+(?:initiales|système|cachées|secrètes))"
            ),
        ),
        (
            0.84,
            r"quelles\s+sont\s+"
            + A(
                r"(?:tes|vos)\s+(?:\w+\s+)?(?:instructions|consignes|règles|directives)"
                r"|les\s+(?:\w+\s+)?(?:instructions|consignes|règles)\s+(?:qu'on|que\s+l'on)\s+(?:t'a|vous\s+"
                r"a)"
            ),
        ),
        (
            0.8,
            r"(?:instructions|consignes|règles|directives)\s+(?:qu'on|que\s+l'on)\s+(?:t'a|vous\s+a)\s+(?:don"
            r"nées|dites"
            r"|fournies|transmises)",
        ),
        (
            0.84,
            r"(?:répète|répétez|recopie|affiche|copie|réécris)\s+(?:tout\s+)?(?:le\s+texte|tout|les\s+mots|le"
            r"\s+contenu)\s+"
            r"(?:ci-dessus|au-dessus|précédent|qui\s+précède)",
        ),
        (
            0.84,
            r"(?:contenu|texte)\s+de\s+(?:ton|votre|ta)\s+(?:message\s+système|prompt|instructions?\s+système"
            r")",
        ),
    ),
    rule(
        "extraction.system_prompt_es",
        EXTRACTION,
        "muestra muéstrame mostrame enseña enséñame revela revélame dime$ di$ repite repíteme imprime "
        "escribe copia "
        "dame$ comparte lista divulga cuáles cuales",
        (
            0.88,
            A(
                r"muestra|muéstrame|mostrame|enseña|enséñame|revela|revélame|dime|di|repite|repíteme|imprime|"
                r"escribe|copia"
                r"|dame|comparte|lista|divulga"
            )
            + r"\s+(?:me\s+)?(?:aquí\s+|ahora\s+|exactamente\s+)?"
            + A(
                r"(?:tu|tus|su|sus)\s+(?:\w+\s+){0,2}?(?:prompt|instrucciones|reglas|directrices|indicaciones"
                r"|mensaje\s+(?:del|de)\s+sistema)|(?:el|la|los|las)\s+(?:\w+\s+){0,2}?(?:prompt\s+(?:del|de)"
                r"\s+sistema"
                r"|mensaje\s+(?:del|de)\s+sistema|instrucciones\s+(?:del\s+sistema|originales|iniciales|ocult"
                r"as|secretas))"
            ),
        ),
        (
            0.84,
            r"cu[áa]les\s+son\s+"
            + A(
                r"tus\s+(?:\w+\s+)?(?:instrucciones|reglas|indicaciones|directrices)"
                r"|las\s+(?:\w+\s+)?(?:instrucciones|reglas|indicaciones)\s+que\s+te\s+(?:dieron|han\s+dado|d"
                r"io)"
            ),
        ),
        (
            0.84,
            r"repite\s+(?:todo\s+)?(?:el\s+texto|todo|el\s+contenido|las\s+palabras)\s+(?:anterior|de\s+arrib"
            r"a|previo"
            r"|que\s+(?:hay|aparece)\s+(?:arriba|antes))",
        ),
    ),
    rule(
        "extraction.system_prompt_it",
        EXTRACTION,
        "mostra rivela dimmi ripeti stampa scrivi copia elenca dammi quali istruzioni regole",
        (
            0.88,
            A(r"mostra|mostrami|rivela|rivelami|dimmi|ripeti|stampa|scrivi|copia|elenca|dammi")
            + r"\s+(?:tutte\s+|tutti\s+)?"
            + A(
                r"(?:il\s+tuo|la\s+tua|le\s+tue|i\s+tuoi|tue|tuoi)\s+(?:\w+\s+){0,2}?(?:prompt|istruzioni|reg"
                r"ole"
                r"|messaggio\s+di\s+sistema)|(?:il|la|le|i|gli)\s+(?:\w+\s+){0,2}?(?:prompt\s+di\s+sistema"
                r"|messaggio\s+di\s+sistema|istruzioni\s+(?:di\s+sistema|iniziali|originali|nascoste|segrete)"
                r")"
            ),
        ),
        (0.82, r"(?:istruzioni|regole)\s+che\s+ti\s+(?:sono\s+state|hanno)\s+(?:date|dato|fornite|fornito)"),
        (0.82, r"quali\s+sono\s+(?:le\s+tue|i\s+tuoi)\s+(?:\w+\s+)?(?:istruzioni|regole|prompt)"),
    ),
    rule(
        "extraction.system_prompt_pt",
        EXTRACTION,
        "mostre mostra revele revela diga repita imprima escreva copie liste instruções regras",
        (
            0.88,
            A(r"mostre|mostra|revele|revela|diga|repita|imprima|escreva|copie|liste")
            + r"(?:-me)?\s+"
            + A(
                r"(?:o\s+seu|a\s+sua|os\s+seus|as\s+suas|seu|sua|seus|suas|o\s+teu|a\s+tua|as\s+tuas|os\s+teu"
                r"s)\s+"
                r"(?:\w+\s+){0,2}?(?:prompt|instruções|regras|mensagem\s+do\s+sistema)|(?:o|a|os|as)\s+(?:\w+"
                r"\s+){0,2}?"
                r"(?:prompt\s+do\s+sistema|mensagem\s+do\s+sistema|instruções\s+(?:iniciais|originais|ocultas"
                r"|secretas"
                r"|do\s+sistema))"
            ),
        ),
        (0.82, r"(?:instruções|regras)\s+que\s+(?:você\s+)?(?:recebeu|lhe\s+deram|te\s+deram|foram\s+dadas)"),
    ),
    rule(
        "extraction.system_prompt_nl",
        EXTRACTION,
        "toon laat geef herhaal print onthul vertel schrijf kopieer instructies regels opdrachten",
        (
            0.88,
            A(r"toon|laat\s+(?:me\s+)?(?:\w+\s+)?zien|geef|herhaal|print|onthul|vertel|schrijf|kopieer")
            + r"\s+(?:me\s+)?"
            + A(
                r"(?:je|jouw|uw)\s+(?:\w+\s+){0,2}?(?:systeemprompt|systeeminstructies|systeembericht|instruc"
                r"ties|prompt"
                r"|opdrachten)|(?:de|alle)\s+(?:\w+\s+){0,2}?(?:systeemprompt|systeeminstructies|systeemberic"
                r"ht"
                r"|(?:oorspronkelijke|verborgen|geheime|initiële)\s+instructies)"
            ),
        ),
        (0.82, r"(?:instructies|regels|opdrachten)\s+die\s+je\s+(?:\w+\s+){0,4}?(?:kreeg|gekregen|ontving)"),
    ),
    rule(
        "extraction.system_prompt_de",
        EXTRACTION,
        "lauten lautet steht sind$",
        (
            0.84,
            r"(?:lauten|sind|steht\s+in|lautet)\s+(?:deine[nmrs]?|dein|ihre[nmrs]?|ihr|der|die|den|dem)\s+(?:"
            r"\w+\s+)?"
            r"(?:system-?prompts?|systemanweisungen|anweisungen|instruktionen|vorgaben|system-?nachricht)",
        ),
        before=r"(?:wie|was)\s+",
        back=8,
    ),
    rule(
        "extraction.system_prompt_es",
        EXTRACTION,
        "instrucciones reglas prompt indicaciones",
        (
            0.84,
            r"(?:instrucciones|reglas|prompt|indicaciones)\s+(?:\w+\s+)?(?:tienes|te\s+dieron|recibiste|te\s+"
            r"han\s+dado)",
        ),
        before=r"qu[ée]\s+",
        back=8,
    ),
    rule(
        "extraction.system_prompt_nl",
        EXTRACTION,
        "zijn waren",
        (0.82, r"(?:zijn|waren)\s+(?:je|jouw|uw)\s+(?:\w+\s+)?(?:instructies|systeemprompt|opdrachten)"),
        before=r"wat\s+",
        back=8,
    ),
    rule(
        "extraction.system_prompt_ru",
        EXTRACTION,
        "покажи выведи повтори раскрой расскажи перечисли скопируй дай$ назови распечатай какие",
        (
            0.88,
            A(r"покажи|выведи|повтори|раскрой|расскажи|перечисли|скопируй|дай|назови|распечатай")
            + r"(?:те)?\s+(?:мне\s+)?"
            + A(
                r"(?:свой|свои|твой|твои|ваш|ваши)\s+(?:\w+\s+){0,2}?(?:промпт|инструкции|правила|указания"
                r"|системное\s+сообщение)|(?:все\s+|весь\s+)?(?:системный\s+промпт|системные\s+инструкции"
                r"|системное\s+сообщение|(?:исходные|изначальные|скрытые|секретные)\s+инструкции)"
            ),
        ),
        (
            0.84,
            r"какие\s+(?:у\s+(?:тебя|вас)\s+(?:есть\s+)?(?:инструкции|правила|указания)|(?:инструкции|правила"
            r"|указания)"
            r"\s+(?:тебе|вам)\s+(?:\w+\s+)?(?:дали|были\s+даны|дал|сообщили))",
        ),
        (0.84, r"повтори(?:те)?\s+(?:весь\s+|все\s+)?(?:текст|всё|все|сообщение)\s+(?:выше|сверху|над)"),
    ),
    rule(
        "extraction.system_prompt_zh",
        EXTRACTION,
        "显示 输出 打印 告诉 透露 泄露 重复 展示 给我看 列出 说出 复述 写出 把",
        (
            0.88,
            r"(?:显示|输出|打印|告诉我|透露|泄露|重复|展示|给我看|列出|说出|复述|写出)(?:一下)?(?:你|您)的?"
            r"(?:完整的?|全部的?|原始的?|初始的?|隐藏的?)?(?:系统提示词?|系统指令|系统消息|初始指令|初始提示|提示词|指令|规则|设定)",
        ),
        (
            0.84,
            r"(?:显示|输出|打印|告诉我|透露|泄露|重复|展示|复述)(?:一下)?(?:系统提示词?|系统指令|初始指令|原始指令|系统消息)",
        ),
        (
            0.86,
            r"把(?:你|您)的?\w{0,4}?(?:系统提示词?|初始指令|指令|提示词|规则|设定)\w{0,6}?(?:输出|显示|打印|告诉我|发给我|写出来|复述)",
        ),
        (
            0.84,
            r"(?:重复|输出|打印|复述)(?:一下)?(?:上面|以上|之前|前面)的?(?:所有)?(?:内容|文字|文本|话|指令)",
        ),
    ),
)

# --- role-play jailbreaks ---------------------------------------------------------------------------

PERSONA = A(
    r"pretend(?:ing)?\s+(?:that\s+)?(?:you\s+are|you're|to\s+be|you\s+have|you\s+were|you\s+can)"
    r"|imagine\s+(?:that\s+)?(?:you\s+are|you're|you\s+were|being|you\s+have)|act(?:ing)?\s+(?:as|like)"
    r"|behave\s+(?:as|like)|role-?play\s+as|play\s+(?:the\s+(?:role|part)\s+of|as)"
    r"|take\s+on\s+the\s+(?:role|persona|character)\s+of|become|you\s*(?:are|'re|’re)\s+(?:now|going\s+to\s+b"
    r"e)"
    r"|you\s*(?:are|'re|’re)\s+(?:an?\s+)?[\w\s,'-]{0,30}?"
    + AI_NOUN
    + r"|you\s+will\s+(?:now\s+)?(?:be|act\s+as)|let's\s+say\s+you're|simulate|respond\s+as|answer\s+as|speak"
    r"\s+as"
    r"|be\s+an?|switch\s+(?:in)?to|if\s+you\s+were|hypothetically"
)
FREE = A(
    r"without\s+(?:any\s+)?(?:[\w-]+\s+(?:or\s+|and\s+)?){0,2}"
    + LIMITS
    + r"|(?:no|zero)\s+(?:[\w-]+\s+)?"
    + A(LIMITS + r"|ethical|moral|safety|content\s+polic")
    + "|"
    + UNBOUND
    + r"|free\s+(?:of|from)\s+(?:all\s+|any\s+|every\s+|your\s+)?(?:\w+\s+)?"
    + LIMITS
    + r"|(?:not|never|no\s+longer)\s+(?:bound|restricted|limited|constrained)\s+by"
    r"|(?:evil|rogue|malicious|dark)\s+(?:\w+\s+)?"
    + AI_NOUN
    + r"|evil\s+(?:twin|confidant|version)|no-limits?"
    r"|(?:has|have|had|with)\s+no\s+(?:\w+\s+)?(?:rules|limits|filters|restrictions|ethics|morals|guidelines)"
    r"|(?:doesn't|does\s+not|don't|do\s+not|never)\s+(?:follow|have|obey)\s+any\s+(?:\w+\s+)?"
    r"(?:rules|guidelines|restrictions|filters|polic)|ignores?\s+(?:all\s+)?(?:the\s+)?(?:usual\s+)?"
    r"(?:rules|guidelines|polic|restrictions)|(?:guidelines|rules|filters|restrictions)\s+(?:have\s+been|are|"
    r"were)\s+"
    r"(?:switched|turned)\s+off|broken\s+free"
)
FREE_LEADS = (
    "without no$ zero unrestrict unfilter uncensor unlimit unbound unchain unleash unlock unmoderat unalign "
    "unhing "
    "amoral immoral jailbroken free not$ never evil rogue malicious dark has$ have$ had$ with$ doesn does$ "
    "don do$ "
    "ignore guidelines rules filters restrictions broken"
)
PERSONA_ML = A(
    r"(?:tu\s+es|vous\s+êtes|sois|deviens|agis\s+comme|fais\s+comme\s+si\s+tu\s+étais)\s+(?:maintenant\s+"
    r"|désormais\s+)?(?:une?\s+)?(?:ia|intelligence\s+artificielle|assistant|chatbot)"
    r"|(?:eres|sé|actúa\s+como|finge\s+(?:ser|que\s+eres))\s+(?:ahora\s+)?(?:una?\s+)?(?:ia|inteligencia\s+ar"
    r"tificial"
    r"|asistente|chatbot)|(?:sei|diventa|comportati\s+come|fingi\s+di\s+essere)\s+(?:ora\s+)?(?:un'|una?\s+)?"
    r"(?:ia|intelligenza\s+artificiale|assistente|chatbot)|(?:du\s+bist|sei|werde|stell\s+dir\s+vor,?\s+du\s+"
    r"bist"
    r"|tu\s+so,?\s+als\s+wärst\s+du)\s+(?:jetzt\s+|nun\s+|ab\s+sofort\s+)?(?:eine?\s+)?(?:ki|ai|assistent|cha"
    r"tbot)"
    r"|(?:você\s+é|seja|aja\s+como|finja\s+ser)\s+(?:agora\s+)?(?:uma?\s+)?(?:ia|inteligência\s+artificial"
    r"|assistente|chatbot)|(?:je\s+bent|wees|doe\s+alsof\s+je)\s+(?:nu\s+)?(?:een\s+)?(?:ai|ki|assistent|chat"
    r"bot)"
    r"|(?:ты|вы)\s+(?:теперь\s+)?(?:ии|искусственный\s+интеллект|ассистент|чат-?бот)"
)
FREE_ML = A(
    r"sans\s+(?:aucune?\s+)?(?:restrictions?|règles?|limites?|filtres?|censure)|débridée?"
    r"|ignore\s+toutes\s+les\s+règles|sin\s+(?:ningún\s+tipo\s+de\s+|ninguna?\s+)?(?:restricciones|reglas"
    r"|límites?|filtros|censura)|malvad[ao]|senza\s+(?:alcuna?\s+)?(?:regole|restrizioni|limiti|filtri|censur"
    r"a)"
    r"|ohne\s+(?:jegliche\s+|irgendwelche\s+|alle\s+)?(?:einschränkungen|regeln|grenzen|filter|zensur)"
    r"|sem\s+(?:nenhuma?\s+)?(?:restrições|regras|limites|filtros|censura)|zonder\s+(?:enige\s+)?(?:beperking"
    r"en"
    r"|regels|grenzen|filters|censuur)|без\s+(?:каких-либо\s+|всяких\s+)?(?:ограничений|правил|фильтров|цензу"
    r"ры)"
)

_ROLEPLAY = (
    rule("roleplay.dan", ROLEPLAY, "anything", (0.92, r"anything\s+now\b"), before=r"do\s+", back=4),
    rule(
        "roleplay.dan",
        ROLEPLAY,
        "better betterdan dan$",
        (0.9, r"better\s?dan\b"),
        (0.86, r"dan\s+(?:mode|prompt|jailbreak|\d+(?:\.\d+)?)\b"),
    ),
    rule(
        "roleplay.dan",
        ROLEPLAY,
        "dan$",
        (0.88, r"dan\b"),
        before=r"(?:you\s+are|you're|act\s+as|pretend\s+to\s+be|become|be|play|called|named|as|du\s+bist|tu\s+es|eres"
        r"|sei)\s+(?:now\s+|jetzt\s+|maintenant\s+|ahora\s+|ora\s+)?(?:a\s+|the\s+)?",
        back=40,
    ),
    rule(
        "roleplay.developer_mode",
        ROLEPLAY,
        "developer",
        (0.86, r"developer\s+mode\s+(?:output|response)s?\b"),
        (
            0.82,
            r"developer\s+mode[^.\n]{0,80}?"
            + A(r"polic|restrict|censor|filter|guideline|ignor|no\s+rules|openai|anything|explicit"),
        ),
        (0.3, r"developer\s+mode"),
    ),
    rule(
        "roleplay.developer_mode",
        ROLEPLAY,
        "developer",
        (0.9, r"developer\s+mode\s+(?:enabled|on|activated)"),
        before=r"(?:chatgpt|gpt|assistant|ai|model|claude|you|yourself|llm)\s+with\s+",
        back=30,
    ),
    rule(
        "roleplay.developer_mode",
        ROLEPLAY,
        "developer",
        (0.85, r"developer\s+mode"),
        before=r"(?:simulate|emulate|pretend|act\s+as|behave\s+as|role-?play)\s+(?:\w+\s+){0,3}?",
        back=60,
    ),
    rule(
        "roleplay.unrestricted_persona",
        ROLEPLAY,
        FREE_LEADS,
        (0.86, FREE),
        before=PERSONA + r"[^.!?\n]{0,100}?",
        back=150,
    ),
    rule(
        "roleplay.unrestricted_persona",
        ROLEPLAY,
        "unrestrict unfilter uncensor unlimit unbound unchain unleash unlock unmoderat unalign unhing amoral "
        "immoral "
        "jailbroken evil rogue malicious",
        (0.86, A(UNBOUND + r"|evil|rogue|malicious") + r"\s+" + AI_NOUN),
        before=r"(?:you\s*(?:are|'re|’re)|be|become|act\s+as|play|pretend\s+to\s+be)\s+(?:now\s+)?(?:an?\s+)?(?:\w+\s+)?",
        back=50,
    ),
    rule(
        "roleplay.no_longer_bound",
        ROLEPLAY,
        "bound restrict limit constrain govern held controll",
        (0.9, r"(?:bound|restricted|limited|constrained|governed|held|controlled)\s+by\b"),
        before=r"you\s*(?:are|'re|’re)\s+(?:now\s+)?(?:no\s+longer|not|never\s+again)\s+",
        back=30,
    ),
    rule(
        "roleplay.no_longer_bound",
        ROLEPLAY,
        "free liberat releas unshackl",
        (
            0.86,
            r"(?:free|liberated|released|freed|unshackled)\s+(?:from|of)\s+(?:all\s+|any\s+|your\s+|the\s+|ev"
            r"ery\s+)?"
            r"(?:\w+\s+)?" + A(LIMITS + r"|programming|shackles|openai|chains"),
        ),
        (0.84, r"(?:liberated|unshackled|unchained)\b"),
        before=r"you\s*(?:are|'re|’re)\s+(?:now\s+)?",
        back=16,
    ),
    rule(
        "roleplay.no_longer_bound",
        ROLEPLAY,
        "anymore longer",
        (0.5, r"(?:anymore|any\s+longer)\b"),
        before=r"you\s*(?:are|'re)\s+not\s+(?:an?\s+)?(?:ai|language\s+model|ai\s+language\s+model|assistant|chatgpt)\b"
        r"[^.\n]{0,20}?",
        back=60,
    ),
    rule(
        "roleplay.no_longer_bound",
        ROLEPLAY,
        "ai$ language assistant chatgpt",
        (0.5, r"(?:ai|language\s+model|ai\s+language\s+model|assistant|chatgpt)\b"),
        before=r"you\s*(?:are|'re)\s+no\s+longer\s+(?:an?\s+)?",
        back=24,
    ),
    rule(
        "roleplay.jailbroken",
        ROLEPLAY,
        "jailbr",
        (0.86, r"jailbreak\s+mode\s+(?:on|enabled|activated|engaged)"),
        (0.8, r"jailbroken\s+(?:ai|assistant|chatgpt|mode|version|model|persona)\b"),
        (0.3, r"jailbr(?:eak|oken)"),
    ),
    rule(
        "roleplay.jailbroken",
        ROLEPLAY,
        "jailbr",
        (0.9, r"jailbr(?:oken|oke)\b"),
        before=r"you\s*(?:are|'re|’re|have\s+been|'ve\s+been)\s+(?:now\s+)?(?:been\s+)?",
        back=24,
    ),
    rule(
        "roleplay.jailbroken",
        ROLEPLAY,
        "jailbr",
        (0.86, r"jailbreak\s+mode\b"),
        before=r"(?:enter|enable|activate|switch\s+(?:to|into)|in|engage)\s+",
        back=16,
    ),
    rule(
        "roleplay.jailbroken",
        ROLEPLAY,
        "jailbr",
        (0.8, r"jailbreak\b"),
        before=r"(?:you\s+are|you're|act\s+as|called|named)\s+",
        back=16,
    ),
    rule(
        "roleplay.evil_ai",
        ROLEPLAY,
        "evil unfilter uncensor unrestrict amoral unethical rogue unchain unlock unalign unhing lawless",
        (
            0.4,
            A(
                r"evil|unfiltered|uncensored|unrestricted|amoral|unethical|rogue|unchained|unlocked|unaligned"
                r"|unhinged|lawless"
            )
            + r"\s+(?:ai|a\.i\.|assistant|chatbot|bot|model|llm|gpt|twin|persona|mode|confidant"
            r"|version\s+of\s+(?:yourself|you|chatgpt))\b",
        ),
    ),
    rule(
        "roleplay.stay_in_character",
        ROLEPLAY,
        "if$ break stay remain keep never",
        (
            0.72,
            r"(?:if\s+you\s+break\s+character|break(?:ing)?\s+character)[^.\n]{0,80}?(?:stay\s+in\s+character"
            r"|correct\s+(?:yourself|your\s+break)|i\s+will\s+(?:say|remind|tell))",
        ),
        (
            0.45,
            r"(?:stay|remain|keep)\s+in\s+character\s+(?:no\s+matter\s+what|at\s+all\s+costs|whatever\s+happe"
            r"ns|even\s+if"
            r"|forever|always)",
        ),
        (0.3, r"(?:stay|remain)\s+in\s+character|never\s+break\s+character|keep\s+that\s+character"),
    ),
    rule(
        "roleplay.never_refuse",
        ROLEPLAY,
        "refus declin reject say$",
        (0.45, r"(?:refuse|decline|reject|say\s+(?:no|that\s+you\s+can(?:not|'t)|you\s+can(?:not|'t)))"),
        before=r"(?:you\s+(?:will\s+|must\s+|should\s+|can\s+)?never|never\s+ever|do\s+not\s+ever|you\s+(?:can(?:not|'t)"
        r"|must\s+not|will\s+not|won't))\s+",
        back=30,
    ),
    rule(
        "roleplay.name_has_no_rules",
        ROLEPLAY,
        "has$",
        (0.45, r"has\s+no\s+(?:\w+\s+)?(?:rules|limits|filters|restrictions|ethics|morals|guidelines)"),
    ),
    rule(
        "roleplay.unrestricted_mode",
        ROLEPLAY,
        "switch go$ enter enable activate unrestrict uncensor unfilter",
        (
            0.82,
            r"(?:switch|go|enter|enable|activate)\s+(?:\w+\s+)?(?:in)?to\s+(?:an?\s+)?(?:unrestricted|uncenso"
            r"red|unfiltered"
            r"|god)\s+mode|(?:unrestricted|uncensored|unfiltered)\s+mode\s+(?:on|enabled|activated)",
        ),
    ),
    rule(
        "roleplay.unrestricted_persona_ml",
        ROLEPLAY,
        "sans$ sin$ senza ohne sem$ zonder без débrid malvad ignore",
        (0.85, FREE_ML),
        before=PERSONA_ML + r"[^.!?\n]{0,60}?",
        back=120,
    ),
    rule(
        "roleplay.unrestricted_persona_ml",
        ROLEPLAY,
        "sans$ sin$ senza ohne sem$ zonder без",
        (0.8, FREE_ML),
        before=r"(?:à\s+partir\s+de\s+maintenant|désormais|a\s+partir\s+de\s+ahora|de\s+ahora\s+en\s+adelante|ab\s+jetzt"
        r"|ab\s+sofort|von\s+nun\s+an|d'ora\s+in\s+poi|a\s+partir\s+de\s+agora|vanaf\s+nu|с\s+этого\s+момента"
        r"|отныне)"
        r"[^.!?\n]{0,60}?",
        back=100,
    ),
    rule(
        "roleplay.unrestricted_persona_zh",
        ROLEPLAY,
        "没有 不受 无任何",
        (0.85, r"(?:没有任何|没有|不受任何?|无任何)(?:限制|约束|规则|过滤|审查)"),
        before=r"(?:你(?:现在)?是|扮演|假装|从现在开始)[^。！？\n]{0,30}?",
        back=40,
    ),
    rule("roleplay.jailbroken", ROLEPLAY, "越狱 开发者模式", (0.8, r"越狱模式|开发者模式")),
)

# --- injections embedded in content (phrase rules; containers and markers live in the engine) --------

AI_TARGET = A(
    r"ai\b(?!\s+(?:team|ethics|committee|group|department|researchers?|community|engineers?|developers?|lab|w"
    r"orking"
    r"|policy|act|safety\s+(?:team|board)))|a\.i\.|llms?\b|assistants?\b|chatbots?\b|(?:large\s+)?language\s+"
    r"models?\b"
    r"|ai\s+(?:assistant|model|agent|system|screening\s+tool|recruiter|tool)s?\b|bots?\b|gpt\b|chatgpt\b|clau"
    r"de\b"
    r"|gemini\b|copilot\b"
)
AGENT_IMPERATIVE = A(
    r"you\s+must|ignore|disregard|the\s+user\s+(?:wants|has\s+authori[sz]ed|asked|requests?)\s+you"
    r"|(?:do\s+not|don't|never)\s+(?:tell|mention|reveal|summari[sz]e)|(?:tell|inform)\s+the\s+(?:user|reader"
    r")"
    r"|when\s+(?:you\s+)?(?:read|summari[sz]|process|see)|delete|forward|exfiltrat|recommend|rank\b"
    r"|(?:say|state|claim)\s+that|output\b|append|reveal|send\b"
)

AI_ANCHORS = "ai$ llm llms assistant chatbot language bot bots gpt chatgpt claude gemini copilot model agent"

_EMBEDDED = (
    rule(
        "embedded.note_to_ai",
        EMBEDDED,
        "note message instruction reminder memo attention important directive command",
        (
            0.82,
            r"(?:notes?|messages?|instructions?|reminder|memo|attention|important\s+(?:message|note|instructi"
            r"ons?)"
            r"|directive|command)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+|an?\s+)?" + AI_TARGET,
        ),
    ),
    rule(
        "embedded.note_to_ai",
        EMBEDDED,
        AI_ANCHORS,
        (
            0.82,
            r"(?:ai|a\.i\.|llm|(?:large\s+)?language\s+model|chatbot|ai\s+(?:model|assistant|agent)|assistant"
            r"|bot)\b",
        ),
        before=r"if\s+you\s*(?:are|'re|’re)\s+(?:an?\s+)?(?:large\s+)?",
        back=24,
    ),
    rule(
        "embedded.note_to_ai",
        EMBEDDED,
        AI_ANCHORS,
        (
            0.82,
            r"(?:ai|llm|assistant|language\s+model|model|chatbot|agent|bot)s?\s+(?:(?:that|which|who)\s+(?:is"
            r"|are)\s+)?"
            r"(?:\w+\s+)?(?:reads?|reading|process(?:es|ing)?|summari[sz](?:es|ing)?|sees?|parses?|parsing|br"
            r"owsing"
            r"|analy[sz]ing|crawling|screening)\s+this\b",
        ),
        (
            0.8,
            r"(?:ai|llm|chatgpt|gpt|claude|assistant|ai\s+assistant|language\s+model|bot)\s*[,:!]\s*[^.!?\n]{"
            r"0,60}?" + AGENT_IMPERATIVE,
        ),
        before=r"(?:^|[.!?\n>:]\s*|\b(?:dear|hey|hi|hello|attention|pay\s+attention|ok|okay|to|if|when)\s*,?\s*"
        r"(?:(?:an?|any|the|all)\s+)?)",
        back=24,
    ),
    rule(
        "embedded.note_to_ai_ml",
        EMBEDDED,
        "hinweis nachricht anweisung notiz wenn note message instruction consigne si$ nota mensaje "
        "instrucción "
        "messaggio se$ mensagem bericht opmerking als$",
        (
            0.82,
            A(
                r"(?:hinweis|nachricht|anweisung|notiz)\s+(?:an|für)\s+(?:die|den)\s+(?:ki|ai|assistenten|ki-"
                r"assistenten"
                r"|sprachmodell)|wenn\s+du\s+eine\s+ki\s+bist|(?:note|message|instruction|consigne)\s+(?:à|po"
                r"ur)\s+(?:l'ia"
                r"|l'assistant|le\s+modèle)|si\s+tu\s+es\s+une\s+ia|(?:nota|mensaje|instrucción)\s+para\s+(?:"
                r"la|el)\s+(?:ia"
                r"|asistente|modelo)|si\s+eres\s+una\s+ia|(?:nota|messaggio)\s+per\s+(?:l'ia|l'assistente)|se"
                r"\s+sei\s+un'ia"
                r"|(?:nota|mensagem)\s+para\s+(?:a|o)\s+(?:ia|assistente)|se\s+você\s+(?:é|for)\s+uma\s+ia"
                r"|(?:bericht|opmerking)\s+voor\s+de\s+(?:ai|assistent)|als\s+je\s+een\s+ai\s+bent"
            ),
        ),
    ),
)

# --- encoding tricks stated in plain text ------------------------------------------------------------

_ENCODED = (
    rule(
        "encoded.decode_and_follow",
        ENCODED,
        "decod decipher decrypt unscrambl translat convert read rot13 base64",
        (
            0.78,
            r"(?:decode|decipher|decrypt|unscramble|translate|convert|read|rot13|base64)\w*\s+(?:[\w'-]+[\s,;"
            r":]+){0,6}?"
            r"(?:and|then)\s+(?:[\w'-]+\s+){0,2}?"
            + A(
                r"follow|execute|obey|act\s+on|carry\s+out|comply\s+with|do\s+(?:what|as|exactly\s+what)\s+it"
                r"\s+(?:says"
                r"|asks|tells|instructs)|run\s+(?:it|them|the\s+instructions?)"
            ),
        ),
    ),
    rule(
        "encoded.evade_filter",
        ENCODED,
        "respond reply answer write encode output talk communicat",
        (
            0.8,
            r"(?:respond|reply|answer|write|encode|output|talk|communicate)\s+(?:\w+\s+){0,4}?(?:in|using|as|"
            r"with)\s+"
            r"(?:base64|rot13|hex|binary|morse|a\s+cipher|leetspeak|caesar)\b[^.\n]{0,80}?"
            + A(
                r"filter|moderation|safety|detect|notice|censor|monitor|guard|bypass|evade"
                r"|so\s+(?:that\s+)?(?:they|it|nobody|no\s+one)\s+(?:can(?:not|'t)|won't)"
            ),
        ),
    ),
)

PHRASE_RULES: tuple[Rule, ...] = (
    *_OVERRIDE_EN,
    *_OVERRIDE_ML,
    *_EXTRACTION_EN,
    *_EXTRACTION_ML,
    *_ROLEPLAY,
    *_EMBEDDED,
    *_ENCODED,
)

# Spaced-out text whose gaps are all alike loses its word boundaries ("i g n o r e a l l"): these run on
# the whole normalized text when it had such runs, written without spaces. No anchors: they always run.
SQUASHED_RULES: tuple[Rule, ...] = (
    rule(
        "override.ignore_previous",
        OVERRIDE,
        "",
        (
            0.9,
            r"(?:ignore|disregard|forget|skip|bypass|override|discard)(?:all|any|every|the|your|of)*(?:previo"
            r"us|prior|above"
            r"|earlier|preceding|initial|original|system)(?:the|your)?(?:instructions?|rules|directions|direc"
            r"tives"
            r"|guidelines|prompts?|commands|programming)",
        ),
        (
            0.85,
            r"(?:ignore|disregard|forget|bypass|override)(?:all|any|every|your)+(?:instructions?|rules|direct"
            r"ions|directives"
            r"|guidelines|restrictions)",
        ),
    ),
    rule(
        "extraction.system_prompt",
        EXTRACTION,
        "",
        (
            0.88,
            r"(?:reveal|print|show|repeat|output|tell|display|dump|leak|give)(?:me|us)?(?:your|the)(?:full|en"
            r"tire|whole"
            r"|initial|original|hidden|secret)?(?:systemprompt|systemmessage|instructions|prompt|initialpromp"
            r"t)",
        ),
    ),
    rule(
        "roleplay.dan", ROLEPLAY, "", (0.9, r"doanythingnow"), (0.85, r"(?:youarenow|actas|pretendtobe)dan")
    ),
    rule(
        "roleplay.unrestricted_persona",
        ROLEPLAY,
        "",
        (
            0.85,
            r"(?:pretend|imagine|actas|youarenow|youare|roleplayas|become)\w{0,30}?(?:without(?:any)?(?:restr"
            r"ictions|rules"
            r"|limits|filters)|norestrictions|norules|nofilters|unfiltered|uncensored|unrestricted)",
        ),
    ),
    rule("roleplay.developer_mode", ROLEPLAY, "", (0.85, r"developermode(?:enabled|output|on)")),
)
