"""The UI's words in English and Arabic: ``I18N``, the one ``gr.I18n`` that ``app.launch`` hands Gradio.

Gradio picks the language in the browser, from its language setting (``navigator.language``: ``ar``, ``ar-EG``, ...
read Arabic; anything else reads English), and writes it to ``<html lang>``; ``assets/locale.js`` then turns the
page right to left for Arabic.

Call sites keep their English and wrap it: ``tr("Generate")`` is the marker Gradio's frontend swaps for the text
of the browser's language. The English stays the key to everything else: run labels, ``Figure.label`` in the API's
output names (``figure:Beam tree``), tests that find a widget by its English label, a ``gr.Warning``. A text with
no entry comes back as it is, in English in both languages, and is remembered in ``missing()`` (a test keeps it
empty, and keeps every entry in use). A ``Blocks`` that shows these widgets must be launched with ``i18n=I18N``
(``app.launch`` is): without it the browser shows the keys.

Not translated, on purpose: a widget whose label is a ``GenerationConfig`` field (``num_beams``, ``temperature``,
``max_new_tokens``, ``seed``, ``penalty_alpha``, ``dola_layers``, ...) keeps the field's name in both languages, so
that the UI, transformers' docs and the API name a setting alike (its ``info=`` help stays English too: it is
mostly ranges and formulas over field names); so do code (``model.generation_config``, ``GenerationConfig JSON``,
``dtype``, ``config_file_name``) and the field names quoted in translated text (``code`` spans are kept verbatim).
What handlers write at run time (status lines, warnings, figure titles, the View code snippet, table headers) is
English: Gradio translates only the text a component is built with.

The Arabic follows the Arabic edition of the Hugging Face docs where it has a term: توليد (generation), رمز / رموز
(token), النموذج, الموجّه (prompt), البحث الشعاعي (beam search), فك الترميز (decoding).
"""

from __future__ import annotations

import gradio as gr
from gradio.i18n import I18nData

__all__ = ["I18N", "TEXTS", "EN", "AR", "tr", "english", "missing", "unused", "RTL_LOCALES"]

RTL_LOCALES = ("ar",)  # the translated languages written right to left (``assets/locale.js`` reads the same list)

_CACHE_INTRO = ("**The KV cache** keeps every layer's keys and values so each step runs the model on one new "
                "token. `cache_implementation=\"quantized\"` stores them in 2 or 4 bits (`cache_config` backend "
                "quanto or HQQ, the newest `residual_length` tokens kept in full precision); \"offloaded\" keeps "
                "layers in CPU memory between uses (needs a GPU). Each run is greedy and is repeated with the "
                "default dynamic cache, so where the texts part is the cache's doing.")
_CACHE_INTRO_AR = ("**ذاكرة KV المؤقتة** تحفظ مفاتيح كل طبقة وقيمها، فلا تشغّل كل خطوة النموذج إلا على رمز جديد "
                   "واحد. `cache_implementation=\"quantized\"` تخزّنها بـ 2 أو 4 بتات (الواجهة الخلفية في "
                   "`cache_config`: \u200fquanto أو HQQ، وتبقى أحدث `residual_length` من الرموز بالدقة الكاملة)؛ "
                   "و\"offloaded\" تُبقي الطبقات في ذاكرة المعالج المركزي بين استخدام وآخر (تحتاج إلى GPU). كل "
                   "تشغيل جشع، ويُعاد بالذاكرة المؤقتة الديناميكية الافتراضية، فحيث يفترق النصّان فذلك من فعل "
                   "الذاكرة المؤقتة.")
NO_GPU_NOTE = " _No GPU here: \"offloaded\" is not offered._"
_NO_GPU_NOTE_AR = " _لا يوجد GPU هنا: الخيار \"offloaded\" غير متاح._"

# key: (English, Arabic). Keys are what the browser looks up; keep them stable when a wording changes.
TEXTS: dict[str, tuple[str, str]] = {
    # --- the page (app.py) ---
    "app_header": ("# Decoding Playground\nHow a language model picks its next token, strategy by strategy: the text "
                   "streams in while the figures show what each step considered.",
                   "# ساحة تجارب فك الترميز\nكيف يختار النموذج اللغوي رمزه التالي، استراتيجيةً بعد استراتيجية: "
                   "يتدفّق النص بينما تُظهر الأشكال ما نظرت فيه كل خطوة."),
    "label_model": ("Model", "النموذج"),
    "label_hub_id": ("Or a Hub id", "أو معرّف على Hub"),
    "label_hub_id_or_path": ("Or a Hub id, local folder or .gguf file",
                             "أو معرّف على Hub أو مجلد محلي أو ملف \u200e.gguf"),
    "info_dtype": ("precision of the weights; auto: bfloat16 where the hardware has it",
                   "دقة الأوزان؛ auto: \u200fbfloat16 حيث يدعمه العتاد"),
    "btn_load_model": ("Load model", "تحميل النموذج"),

    # --- tab titles ---
    "tab_greedy": ("Greedy", "البحث الجشع"),
    "tab_sampling": ("Sampling", "أخذ العينات"),
    "tab_beam": ("Beam search", "البحث الشعاعي"),
    "tab_beam_sample": ("Beam sampling", "أخذ العينات الشعاعي"),
    "tab_diverse_beam": ("Diverse beam search", "البحث الشعاعي المتنوّع"),
    "tab_contrastive": ("Contrastive", "البحث التبايني"),
    "tab_dola": ("DoLa", "DoLa"),
    "tab_speculative": ("Speculative", "فك الترميز التخميني"),
    "tab_cache": ("KV cache", "ذاكرة KV المؤقتة"),
    "tab_compare": ("Compare", "مقارنة"),
    "tab_branches": ("Branches", "الفروع"),
    "tab_config": ("Config & Share", "الإعدادات والمشاركة"),

    # --- tab intros ---
    "intro_greedy": ("**Greedy search** appends the single most probable token at every step "
                     "(`do_sample=False`, `num_beams=1`): deterministic, fast, and prone to repetition.",
                     "**البحث الجشع** يُلحق في كل خطوة الرمزَ الأعلى احتمالًا وحده (`do_sample=False`، "
                     "`num_beams=1`): حتميّ وسريع، لكنه يميل إلى التكرار."),
    "intro_sampling": ("**Multinomial sampling** (`do_sample=True`) draws each token from the model's distribution "
                       "after the logits warpers reshaped it: `temperature` scales the logits, `top_k` / `top_p` / "
                       "`min_p` / `typical_p` / `epsilon_cutoff` / `eta_cutoff` remove unlikely tokens. The same seed "
                       "gives the same text.",
                       "**أخذ العينات متعدّد الحدود** (`do_sample=True`) يسحب كل رمز من توزيع النموذج بعد أن تعيد "
                       "مُعدِّلات اللوجيتات تشكيله: `temperature` تغيّر مقياس اللوجيتات، و `top_k` / `top_p` / "
                       "`min_p` / `typical_p` / `epsilon_cutoff` / `eta_cutoff` تحذف الرموز المستبعَدة. البذرة "
                       "نفسها تعطي النص نفسه."),
    "intro_beam": ("**Beam search** keeps the `num_beams` best partial sequences at every step and expands each by its "
                   "most probable tokens; finished hypotheses are ranked by `score / length ** length_penalty`. The "
                   "streamed text is the current best hypothesis; the tree shows every candidate it tried.",
                   "**البحث الشعاعي** يُبقي في كل خطوة أفضل `num_beams` من التسلسلات الجزئية، ويمدّ كلًّا منها "
                   "بأرجح رموزه؛ وتُرتَّب الفرضيات المكتملة بحسب `score / length ** length_penalty`. النص المتدفّق "
                   "هو أفضل فرضية حتى الآن، والشجرة تُظهر كل مرشّح جرّبه."),
    "intro_beam_sample": ("**Beam sampling** (`num_beams > 1`, `do_sample=True`) draws each beam's continuations from "
                          "the warped distribution instead of taking the top ones, then keeps the best `num_beams` as "
                          "beam search does. The same seed gives the same beams.",
                          "**أخذ العينات الشعاعي** (`num_beams > 1`، `do_sample=True`) يسحب تتمّات كل شعاع من "
                          "التوزيع المعدَّل بدل أخذ أعلاها، ثم يُبقي أفضل `num_beams` كما يفعل البحث الشعاعي. "
                          "البذرة نفسها تعطي الأشعة نفسها."),
    "intro_diverse_beam": ("**Diverse beam search** splits `num_beams` into `num_beam_groups` groups that run beam "
                           "search one after the other at each step; a group's scores lose `diversity_penalty` for "
                           "every time an earlier group picked the same token at this step (Hamming diversity). The "
                           "tree colours beams by group.",
                           "**البحث الشعاعي المتنوّع** يقسم `num_beams` إلى `num_beam_groups` من المجموعات تُجري "
                           "البحث الشعاعي واحدةً تلو الأخرى في كل خطوة؛ وتخسر درجات المجموعة `diversity_penalty` عن "
                           "كل مرة اختارت فيها مجموعة سابقة الرمزَ نفسه في هذه الخطوة (تنوّع هامينغ). وتلوّن الشجرة "
                           "الأشعة بحسب مجموعاتها."),
    "intro_contrastive": ("**Contrastive search** (`penalty_alpha > 0`, `top_k > 1`) looks at the `top_k` most "
                          "probable tokens, runs the model on each, and picks the one whose hidden state is least "
                          "similar to the context, weighted by `penalty_alpha`. `penalty_alpha=0` is greedy search.",
                          "**البحث التبايني** (`penalty_alpha > 0`، `top_k > 1`) ينظر في الرموز الأعلى احتمالًا "
                          "وعددها `top_k`، ويشغّل النموذج على كلٍّ منها، ويختار الرمز الذي تكون حالته المخفية أقلّ "
                          "شبهًا بالسياق، موزونًا بـ `penalty_alpha`. والقيمة `penalty_alpha=0` هي البحث الجشع."),
    "intro_dola": ("**DoLa** (`dola_layers`) contrasts the final layer's next-token log-probabilities with those of "
                   "an earlier (premature) layer, the one whose distribution diverges most, and picks from the "
                   "difference: facts the upper layers add get amplified. `\"low\"` / `\"high\"` choose the lower or "
                   "upper half of the layers as candidates, or give a list. The right-hand text is plain greedy "
                   "decoding with the same `repetition_penalty`, for comparison.",
                   "**طريقة DoLa** (`dola_layers`) تقابل لوغاريتمات احتمالات الرمز التالي في الطبقة الأخيرة "
                   "بنظيرتها في طبقة أبكر (مبكرة النضج)، هي الطبقة التي يبتعد توزيعها أكثر من غيرها، وتختار من الفرق "
                   "بينهما: فتتضخّم الحقائق التي تضيفها الطبقات العليا. `\"low\"` / `\"high\"` تجعلان النصف الأدنى أو "
                   "الأعلى من الطبقات مرشّحًا، أو أعطِ قائمة. والنص الثاني فكّ ترميز جشع عادي بقيمة "
                   "`repetition_penalty` نفسها، للمقارنة."),
    "intro_speculative": ("**Assisted decoding** lets a cheap drafter propose several tokens that the main model "
                          "verifies in one forward pass: an `assistant_model` (a smaller model; another vocabulary "
                          "works through universal assisted decoding) or **prompt lookup** "
                          "(`prompt_lookup_num_tokens`), which copies n-grams from the prompt. Under greedy decoding "
                          "the text equals plain greedy's; only the speed changes, measured below against a plain "
                          "greedy run of the same prompt.",
                          "**فك الترميز بالمساعدة** يدع مُسوِّدًا رخيصًا يقترح عدة رموز يتحقّق منها النموذج "
                          "الرئيسي في تمريرة أمامية واحدة: إما `assistant_model` (نموذج أصغر؛ وتعمل المفردات "
                          "المختلفة عبر فك الترميز بالمساعدة الشامل) وإما **البحث في الموجّه** "
                          "(`prompt_lookup_num_tokens`) الذي ينسخ متتاليات n-gram من الموجّه. في فك الترميز الجشع "
                          "يساوي النصُّ نصَّ البحث الجشع العادي؛ لا تتغيّر إلا السرعة، وتُقاس أدناه مقابل تشغيل "
                          "جشع عادي للموجّه نفسه."),
    "intro_cache": (_CACHE_INTRO, _CACHE_INTRO_AR),
    "intro_cache_no_gpu": (_CACHE_INTRO + NO_GPU_NOTE, _CACHE_INTRO_AR + _NO_GPU_NOTE_AR),
    "intro_compare": ("**Compare** runs several strategies (settings from `assets/presets/compare.json`) on the same "
                      "prompt one after the other, and shows their tokens as columns, the first position where they "
                      "differ outlined and every token that differs from the first strategy's underlined, with tokens "
                      "per second.",
                      "**المقارنة** تشغّل عدة استراتيجيات (إعداداتها من `assets/presets/compare.json`) على الموجّه "
                      "نفسه واحدةً تلو الأخرى، وتعرض رموزها أعمدةً متجاورة: أول موضع تختلف فيه مُحاط بإطار، وكل رمز "
                      "يختلف عن رمز الاستراتيجية الأولى مُسطَّر، مع عدد الرموز في الثانية."),
    "intro_branches": ("**Branches**: every run of this session, as a tree of forks per prompt. Continue a run with "
                       "another token in any strategy tab (or step through it, or sample many) and the runs grow into "
                       "a tree here. Click a node to read that run; pick two runs to see where they diverge and which "
                       "one the model prefers.",
                       "**الفروع**: كل تشغيلات هذه الجلسة، شجرةً من التفرّعات لكل موجّه. تابِع تشغيلًا برمز آخر في "
                       "أي تبويب استراتيجية (أو تقدّم فيه خطوة خطوة، أو خذ عينات كثيرة) فتنمو التشغيلات هنا شجرةً. "
                       "انقر عقدة لقراءة ذلك التشغيل، واختر تشغيلين لترى أين يفترقان وأيّهما يفضّل النموذج."),

    # --- the settings column (playground/tabs/base.py) ---
    "label_prompt": ("Prompt", "الموجّه"),
    "label_example_prompts": ("Example prompts", "أمثلة على الموجّهات"),
    "label_chat": ("Apply chat template", "تطبيق قالب المحادثة"),
    "info_chat": ("tokenizer.apply_chat_template, for instruct models",
                  "لنماذج التعليمات: tokenizer.apply_chat_template"),
    "btn_generate": ("Generate", "توليد"),
    "btn_stop": ("Stop", "إيقاف"),
    "label_status": ("Status", "الحالة"),
    "ph_stop_strings": ("comma-separated; \\n for a newline", "مفصولة بفواصل؛ \u200e\\n لسطر جديد"),
    "info_seed": ("the same seed gives the same text; empty: a new random seed each run",
                  "البذرة نفسها تعطي النص نفسه؛ فارغة: بذرة عشوائية جديدة في كل تشغيل"),
    "label_preset": ("Preset", "إعداد مسبق"),
    "label_samples_n": ("samples N", "عدد العينات N"),
    "info_samples_n": ("runs with seeds seed, seed+1, ... merged into one tree",
                       "تشغيلات بالبذور seed و seed+1 و... مدموجة في شجرة واحدة"),
    "btn_sample_n": ("Sample N", "خذ N عينة"),
    "label_advanced": ("Advanced", "خيارات متقدّمة"),
    "group_penalties": ("Penalties and banned words", "العقوبات والكلمات المحظورة"),
    "group_guidance": ("Guidance and watermark", "التوجيه والعلامة المائية"),
    "group_samplers": ("Samplers (truncation and temperature)", "أساليب أخذ العينات (الاقتطاع ودرجة الحرارة)"),
    "group_order": ("Sampler chain order", "ترتيب سلسلة أخذ العينات"),
    "group_structured": ("Structured output (xgrammar)", "المخرجات المهيكلة (xgrammar)"),
    "group_limits": ("Lengths, forced tokens and encoder-decoder models",
                     "الأطوال والرموز المفروضة ونماذج المشفّر-المفكّك"),
    "group_constraints": ("Forced words (constrained beam search)", "الكلمات المفروضة (البحث الشعاعي المقيَّد)"),
    "label_record_lens": ("Record the logit lens", "تسجيل عدسة اللوجيت"),
    "info_record_lens": ("every layer read through the LM head: about one more head per layer and step, so runs are "
                         "slower", "تُقرأ كل طبقة عبر رأس LM: نحو رأس إضافي لكل طبقة وخطوة، فتبطؤ التشغيلات"),
    "label_defaults_only": ("Leave max_new_tokens unset (use the model's defaults)",
                            "اترك max_new_tokens دون تعيين (استخدم القيم الافتراضية للنموذج)"),
    "label_model_defaults": ("The model's default generation config", "إعدادات التوليد الافتراضية للنموذج"),
    "label_strategies": ("Strategies", "الاستراتيجيات"),
    "group_strategies": ("Strategies to compare", "الاستراتيجيات المراد مقارنتها"),
    "info_strategies": ("the strategies of assets/presets/compare.json, then every tab's presets (e.g. Sampling · "
                        "min_p 0.1, top-nσ 1.0, XTC)",
                        "استراتيجيات assets/presets/compare.json، ثم الإعدادات المسبقة لكل تبويب (مثل Sampling · "
                        "min_p 0.1، top-nσ 1.0، XTC)"),

    # --- the run column (playground/tabs/base.py) ---
    "label_tokens": ("Tokens coloured as \"colour by\" says (hover: alternatives; click one to pick its step)",
                     "الرموز ملوّنةً كما يقول «التلوين بحسب» (مرّر المؤشر: البدائل؛ انقر رمزًا لاختيار خطوته)"),
    "label_colour_by": ("colour by", "التلوين بحسب"),
    "info_colour_by": ("the chosen token's p, the step's entropy H, or its surprisal −ln p",
                       "احتمال الرمز المختار p، أو إنتروبيا الخطوة H، أو مفاجأته −ln p"),
    "label_watch": ("watch", "مراقبة"),
    "info_watch": ("tokens to follow at every step, even outside the top candidates: their texts or #<id>, "
                   "comma-separated, up to 8 (\"the, Paris\" watches \"the\" and \" Paris\")",
                   "رموز تُتابَع في كل خطوة، حتى خارج أعلى المرشّحين: نصوصها أو #<id>، مفصولةً بفواصل، حتى 8 "
                   "(\"the, Paris\" تراقب \"the\" و\" Paris\")"),
    "placeholder_watch": ("e.g. the, Paris, #1234", "مثلًا the, Paris, #1234"),
    "text_generated": ("Generated text", "النص المولَّد"),
    "text_dola": ("DoLa text", "نص DoLa"),
    "text_dola_greedy": ("Greedy text (same settings, no dola_layers)",
                         "النص الجشع (الإعدادات نفسها، دون dola_layers)"),
    "text_assisted": ("Assisted text", "النص بالمساعدة"),
    "text_assisted_greedy": ("Greedy text (no assistant)", "النص الجشع (دون مساعد)"),
    "text_cache_chosen": ("Text with the chosen cache", "النص بالذاكرة المؤقتة المختارة"),
    "text_cache_default": ("Text with the default dynamic cache", "النص بالذاكرة المؤقتة الديناميكية الافتراضية"),
    "text_compare": ("Texts side by side", "النصوص جنبًا إلى جنب"),
    "label_step": ("step", "الخطوة"),
    "info_step": ("pick a step to see its alternatives", "اختر خطوة لترى بدائلها"),
    "label_row": ("row", "الصف"),
    "info_row": ("returned sequence or beam", "التسلسل المُعاد أو الشعاع"),
    "label_alternatives": ("Top alternatives at the picked step", "أبرز البدائل في الخطوة المختارة"),
    "label_token": ("token", "الرمز"),
    "ph_token": ("#1234 or a token's text", "نص رمز أو \u200e#1234"),
    "info_token": ("click an alternative above, or type a token (its text or #<id>); it replaces the picked step's "
                   "choice",
                   "انقر بديلًا أعلاه، أو اكتب رمزًا (نصّه أو \u200e#<id>\u200e)؛ فيحلّ محلّ اختيار الخطوة المختارة"),
    "label_beam_node": ("beam node", "عقدة الشعاع"),
    "info_beam_node": ("click a node of the beam tree", "انقر عقدة في شجرة الأشعة"),
    "btn_branch": ("Continue with this token", "المتابعة بهذا الرمز"),
    "btn_from_node": ("Continue from this node", "المتابعة من هذه العقدة"),
    "btn_next_token": ("Next token", "الرمز التالي"),
    "btn_attribute": ("Attribute this step", "إسناد هذه الخطوة"),
    "label_attribution_steps": ("integrated gradients steps", "خطوات التدرجات المتكاملة"),
    "label_attribution": ("Attribution of the picked step (hover a token for its score)",
                          "إسناد الخطوة المختارة (مرّر المؤشر فوق رمز لترى درجته)"),
    "btn_download_trace": ("Download trace (JSON)", "تنزيل أثر التشغيل (JSON)"),
    "btn_load_trace": ("Load trace (JSON)", "تحميل أثر تشغيل (JSON)"),
    "btn_share_link": ("Share link", "رابط المشاركة"),
    "info_share_link": ("opens this tab with its prompt and settings (copied to the clipboard where the browser "
                        "lets it)", "يفتح هذا التبويب بموجّهه وإعداداته (ويُنسخ إلى الحافظة حيث يسمح المتصفح)"),
    "label_view_code": ("View code", "عرض الشيفرة"),
    "label_view_code_box": ("Python that reproduces this run", "شيفرة Python التي تعيد إنتاج هذا التشغيل"),

    # --- figures: sub-tab labels ---
    "fig_candidates": ("Candidates at the picked step", "المرشّحون في الخطوة المختارة"),
    "fig_candidates_beam": ("Candidates of the picked beam at the picked step",
                            "مرشّحو الشعاع المختار في الخطوة المختارة"),
    "fig_candidates_first": ("Candidates of the first strategy at the picked step",
                             "مرشّحو الاستراتيجية الأولى في الخطوة المختارة"),
    "fig_chain": ("Sampler chain at the picked step", "سلسلة أخذ العينات في الخطوة المختارة"),
    "fig_entropy": ("Entropy per step", "الإنتروبيا في كل خطوة"),
    "fig_watermark": ("Watermark", "العلامة المائية"),
    "fig_lens": ("Logit lens", "عدسة اللوجيت"),
    "fig_lens_step": ("Logit lens at the picked step", "عدسة اللوجيت في الخطوة المختارة"),
    "fig_watch": ("Watched tokens", "الرموز المراقَبة"),
    "fig_branch_tree": ("Branch tree", "شجرة الفروع"),
    "fig_samples": ("Samples", "العينات"),
    "fig_smoothing": ("Smoothing factor curve", "منحنى عامل التنعيم"),
    "fig_beam_tree": ("Beam tree", "شجرة الأشعة"),
    "fig_contrastive": ("Contrastive scores", "الدرجات التباينية"),
    "fig_dola": ("Layer divergences", "تباعد الطبقات"),
    "fig_drafted": ("Drafted tokens", "الرموز المقترَحة"),
    "fig_timing": ("Timing vs plain greedy", "التوقيت مقابل البحث الجشع العادي"),
    "fig_cache": ("Cache memory per step", "ذاكرة التخزين المؤقت في كل خطوة"),
    "fig_speed": ("Tokens per second", "الرموز في الثانية"),
    "fig_logprobs": ("Log-probability per position", "لوغاريتم الاحتمال في كل موضع"),

    # --- figures: captions (playground/figures/*.py CAPTION) ---
    "cap_candidates": ("The tokens the model considered at one step. Grey bars are the model's own probabilities, blue "
                       "bars the probabilities after the logits processors (temperature, top-k, top-p, penalties...); "
                       "a crossed bar was removed by the processor named above it, and ★ (and an orange outline) "
                       "marks the token that was chosen.",
                       "الرموز التي نظر فيها النموذج في خطوة واحدة. الأعمدة الرمادية احتمالات النموذج نفسه، والزرقاء "
                       "الاحتمالات بعد معالِجات اللوجيتات (temperature و top-k و top-p والعقوبات...)؛ والعمود "
                       "المشطوب أزاله المعالِج المذكور فوقه، وتعلِّم ★ (وإطار برتقالي) الرمز الذي اختير."),
    "cap_beam_tree": ("Every token beam search tried, step by step from left to right: a line joins each token to the "
                      "hypothesis it extends. Faded tokens were pruned, stars are finished hypotheses with their final "
                      "score, diamonds were forced by a constraint, and the gold path is the sequence the search "
                      "returns (or its current best while running). Colours are the groups of diverse beam search.",
                      "كل رمز جرّبه البحث الشعاعي، خطوةً خطوة من اليسار إلى اليمين: يصل خطٌّ كل رمز بالفرضية التي "
                      "يمدّها. الرموز الباهتة شُذِّبت، والنجوم فرضيات مكتملة مع درجتها النهائية، والمعيّنات فرضها "
                      "قيد، والمسار الذهبي هو التسلسل الذي يعيده البحث (أو أفضل ما لديه أثناء التشغيل). والألوان هي "
                      "مجموعات البحث الشعاعي المتنوّع."),
    "cap_speculative": ("Each column is one round of assisted decoding: a small draft model (or prompt lookup) "
                        "proposes tokens, the main model checks them all in one forward pass. Green were accepted, red "
                        "rejected, blue is the main model's own token after the last accepted one (a correction or a "
                        "bonus token); the dash marks how many tokens the next round may draft.",
                        "كل عمود جولة واحدة من فك الترميز بالمساعدة: يقترح نموذج مسوّدة صغير (أو البحث في الموجّه) "
                        "رموزًا، ويتحقّق منها النموذج الرئيسي كلها في تمريرة أمامية واحدة. الأخضر قُبِل، والأحمر "
                        "رُفِض، والأزرق رمز النموذج الرئيسي نفسه بعد آخر رمز مقبول (تصحيح أو رمز إضافي)؛ وتدلّ "
                        "الشَّرطة على عدد الرموز التي قد تقترحها الجولة التالية."),
    "cap_timing": ("Generation speed of the same prompt with and without the assistant. Both produce the same tokens "
                   "under greedy decoding; the assistant only changes how many forward passes of the main model it "
                   "takes.",
                   "سرعة التوليد للموجّه نفسه مع المساعد ودونه. كلاهما ينتج الرموز نفسها في فك الترميز الجشع؛ ولا "
                   "يغيّر المساعد إلا عدد التمريرات الأمامية التي يحتاجها النموذج الرئيسي."),
    "cap_dola": ("DoLa compares the final layer's next-token distribution with earlier layers'. Each cell is the "
                 "Jensen-Shannon divergence between a candidate layer and the final layer at one step; ✕ marks the "
                 "premature layer DoLa contrasted against (the most divergent one), whose difference picks the token.",
                 "تقارن DoLa توزيع الرمز التالي في الطبقة الأخيرة بتوزيعات الطبقات الأبكر. كل خلية هي تباعد "
                 "جنسن-شانون بين طبقة مرشّحة والطبقة الأخيرة في خطوة واحدة؛ وتعلِّم ✕ الطبقة المبكرة التي قابلتها "
                 "DoLa (الأكثر تباعدًا)، والفرق بينهما هو ما يختار الرمز."),
    "cap_chain": ("The sampler chain at the picked step, stage by stage in the order it ran. Bars: how many tokens "
                  "still have a chance (log scale). Blue line: how much of the model's own probability those tokens "
                  "hold. Orange line: the probability of the token that was finally chosen after each stage.",
                  "سلسلة أخذ العينات في الخطوة المختارة، مرحلةً مرحلة بالترتيب الذي جرت به. الأعمدة: عدد الرموز التي "
                  "ما زالت لها فرصة (بمقياس لوغاريتمي). الخط الأزرق: نصيب تلك الرموز من احتمال النموذج نفسه. الخط "
                  "البرتقالي: احتمال الرمز الذي اختير في النهاية، بعد كل مرحلة."),
    "cap_entropy": ("Entropy (nats) of the distribution each token was drawn from, after every stage: low means the "
                    "chain left one obvious choice. The dotted line is the effective vocabulary e^H (right axis, log "
                    "scale): as many equally likely tokens as that uncertainty amounts to. With structured output, the "
                    "red line is the share of the model's probability the grammar removed at each step (hover for how "
                    "many tokens it allowed).",
                    "إنتروبيا (بالـ nat) التوزيع الذي سُحب منه كل رمز، بعد كل مرحلة: القيمة المنخفضة تعني أن السلسلة "
                    "تركت خيارًا واحدًا واضحًا. والخط المنقّط هو المفردات الفعلية e^H (المحور الأيمن، بمقياس "
                    "لوغاريتمي): عدد الرموز المتساوية الاحتمال الذي يعادل ذلك الشك. ومع المخرجات المهيكلة، الخط "
                    "الأحمر حصة احتمال النموذج التي أزالتها القواعد النحوية في كل خطوة (مرّر المؤشر لترى عدد الرموز "
                    "التي سمحت بها)."),
    "cap_watch": ("The probability each watched token had at every step, on a log scale: the solid line after every "
                  "logits processor (the distribution the token was drawn from), the dotted one the model's own. A "
                  "cross at the bottom marks a step where a processor removed the token. Hover a point for its "
                  "probability and rank at each stage of the chain.",
                  "احتمال كل رمز مراقَب في كل خطوة، بمقياس لوغاريتمي: الخط المتصل بعد كل معالج للوجيت (التوزيع الذي "
                  "سُحب منه الرمز)، والمنقّط احتمال النموذج نفسه. وتعلّم علامة × في الأسفل خطوةً أزال فيها معالجٌ "
                  "الرمز. مرّر المؤشر فوق نقطة لترى احتمالها ورتبتها في كل مرحلة من السلسلة."),
    "cap_watermark": ("Each generated token, green when it fell in the green list its context seeds (the watermark "
                      "favours those), red otherwise; the title gives transformers' WatermarkDetector z-score.",
                      "كل رمز مولَّد، أخضر حين وقع في القائمة الخضراء التي يبذرها سياقه (والعلامة المائية تفضّل تلك "
                      "الرموز)، وأحمر في غير ذلك؛ ويعطي العنوان درجة z من WatermarkDetector في transformers."),
    "cap_contrastive": ("Contrastive search scores each of the top-k tokens as (1 − α)·confidence − α·degeneration "
                        "penalty, where the penalty is how similar the token's hidden state is to the text so far. "
                        "Top: the latest step's candidates; bottom: every step's candidates ranked by confidence, ☆ "
                        "the chosen one — a ☆ below rank 1 is a step where the penalty overruled greedy search.",
                        "يمنح البحث التبايني كل رمز من رموز top-k الدرجة: \u2066(1 − α)\u2069 × الثقة − \u2066α\u2069 "
                        "× عقوبة التدهور، والعقوبة مقدار شبه الحالة المخفية للرمز بالنص حتى الآن. في الأعلى: مرشّحو "
                        "آخر خطوة؛ وفي الأسفل: مرشّحو كل خطوة مرتّبين بحسب الثقة، و ☆ هو المختار — و ☆ تحت المرتبة 1 "
                        "خطوةٌ غلبت فيها العقوبةُ البحثَ الجشع."),
    "cap_cache": ("Memory held by the key/value cache after each step, one line per cache implementation. Quantized "
                  "caches store keys and values in fewer bits, so their line climbs more slowly; their tokens may "
                  "differ from the full-precision run after the dashed line.",
                  "الذاكرة التي تشغلها ذاكرة المفاتيح والقيم المؤقتة بعد كل خطوة، خطٌّ لكل تطبيق للذاكرة المؤقتة. "
                  "الذاكرات المكمَّمة تخزّن المفاتيح والقيم ببتات أقل، فيصعد خطّها أبطأ؛ وقد تختلف رموزها عن تشغيل "
                  "الدقة الكاملة بعد الخط المتقطّع."),
    "cap_speed": ("Tokens generated per second by each strategy on the same prompt and model (higher is faster). Beam "
                  "search and contrastive search do more work per token; assisted decoding can do less.",
                  "الرموز المولَّدة في الثانية لكل استراتيجية على الموجّه والنموذج نفسيهما (الأعلى أسرع). البحث "
                  "الشعاعي والبحث التبايني يبذلان عملًا أكثر لكل رمز؛ وقد يبذل فك الترميز بالمساعدة أقل."),
    "cap_lens": ("The logit lens reads every layer's hidden state through the model's final norm and LM head, as if "
                 "the model stopped there. Each cell is the probability a layer (rows, the embeddings at the bottom) "
                 "gives the token the step chose (columns): a column that lights up only near the top is a prediction "
                 "the last layers made. Hover a cell for that layer's top tokens and its KL divergence from the final "
                 "layer. Reading every layer costs about one more LM head per layer and step. With watched tokens, the "
                 "menu at the top right shows a watched token's probability per layer instead, on a log scale.",
                 "تقرأ عدسة اللوجيت الحالة المخفية لكل طبقة عبر التطبيع الأخير للنموذج ورأس LM، كأن النموذج توقّف "
                 "عندها. كل خلية هي الاحتمال الذي تعطيه طبقةٌ (الصفوف، والتضمينات في الأسفل) للرمز الذي اختارته "
                 "الخطوة (الأعمدة): العمود الذي لا يضيء إلا قرب القمة تنبّؤٌ صنعته الطبقات الأخيرة. مرّر المؤشر فوق "
                 "خلية لترى أعلى رموز تلك الطبقة وتباعد KL بينها وبين الطبقة الأخيرة. وقراءة كل طبقة تكلّف نحو رأس "
                 "LM إضافي لكل طبقة وخطوة. ومع الرموز المراقَبة، تُظهر القائمة أعلى اليمين احتمال رمز مراقَب في كل "
                 "طبقة بدلًا منه، بمقياس لوغاريتمي."),
    "cap_lens_step": ("Each layer's most probable next tokens at the picked step, most probable on the left, coloured "
                      "by that layer's probability; ★ marks the token the step chose.",
                      "أرجح الرموز التالية لكل طبقة في الخطوة المختارة، والأرجح على اليسار، ملوّنةً باحتمال تلك "
                      "الطبقة؛ وتعلِّم ★ الرمز الذي اختارته الخطوة."),
    "cap_branch_tree": ("Every run of this session on this prompt. A run that continues another (a token you forced, a "
                        "step-by-step run, a resume) hangs from it; the edge says which token was forced at which step "
                        "and which settings changed. Click a node to show that run.",
                        "كل تشغيلات هذه الجلسة على هذا الموجّه. التشغيل الذي يتابع تشغيلًا آخر (برمز فرضتَه، أو "
                        "تشغيل خطوة خطوة، أو استئناف) يتدلّى منه؛ ويذكر الضلع أيّ رمز فُرض في أيّ خطوة وأيّ الإعدادات "
                        "تغيّرت. انقر عقدة لعرض ذلك التشغيل."),
    "cap_compare_runs": ("The log-probability the model gave each run's token at every position after the prompt "
                         "(from the runs' records): where the lines part the runs diverge; the higher line is the "
                         "continuation the model prefers there.",
                         "لوغاريتم الاحتمال الذي أعطاه النموذج لرمز كل تشغيل في كل موضع بعد الموجّه (من سجلات "
                         "التشغيلات): حيث يفترق الخطّان يفترق التشغيلان؛ والخط الأعلى هو التتمّة التي يفضّلها "
                         "النموذج هناك."),
    "cap_compare_strategies": ("The log-probability the model gave each strategy's token at every position after "
                               "the prompt (from the runs' records): where the lines part the strategies diverge; the "
                               "higher line is the continuation the model prefers there.",
                               "لوغاريتم الاحتمال الذي أعطاه النموذج لرمز كل استراتيجية في كل موضع بعد الموجّه (من "
                               "سجلات التشغيلات): حيث تفترق الخطوط تفترق الاستراتيجيات؛ والخط الأعلى هو التتمّة التي "
                               "يفضّلها النموذج هناك."),
    "cap_smoothing": ("How the smoothing factor (quadratic sampling) moves each token's logit, for this run's "
                      "smoothing_factor and smoothing_curve. Across: a logit as the sampler received it, measured "
                      "from the top token's (0 is the top token, −2 is 2 below it); up: the logit it gave back, "
                      "measured the same way. The dotted diagonal is \"unchanged\". In the green band tokens move "
                      "closer to the top one (the runners-up gain probability), in the red band they fall further "
                      "behind (the tail is cut harder). A token g below the top is e^-g times as likely as the top "
                      "token: hover the curve for both. The curve is the sampler's own output on a row of made-up "
                      "logits.",
                      "كيف يحرّك عامل التنعيم (أخذ العينات التربيعي) لوجيت كل رمز، بقيمتَي smoothing_factor و "
                      "smoothing_curve في هذا التشغيل. أفقيًا: اللوجيت كما تلقّته أداة أخذ العينات، مقيسًا من لوجيت "
                      "الرمز الأعلى (0 هو الرمز الأعلى، و\u200e−2 يقع تحته بمقدار 2)؛ وعموديًا: اللوجيت الذي أعادته، "
                      "مقيسًا بالطريقة نفسها. والقطر المنقّط يعني \"بلا تغيير\". في الشريط الأخضر تقترب الرموز من "
                      "الرمز الأعلى (فتكسب الرموز التي تليه احتمالًا)، وفي الشريط الأحمر تتأخّر عنه أكثر (فيُقَصّ "
                      "الذيل بشدّة أكبر). والرمز الذي يقع تحت الأعلى بمقدار g أقلّ احتمالًا منه بعامل e^-g: مرّر "
                      "المؤشر فوق المنحنى لترى الاثنين. والمنحنى هو مخرَج أداة أخذ العينات نفسها على صفّ من لوجيتات "
                      "مصطنعة."),
    "cap_samples": ("Many samples of the same prompt merged into one prefix tree: each branch says how many samples "
                    "took it and the probability the model gave that token there (hover); colour is the entropy of "
                    "the distribution the token was drawn from (darker: more uncertain). Below, that entropy per "
                    "step: the mean over the samples and their range.",
                    "عينات كثيرة من الموجّه نفسه مدموجة في شجرة بادئات واحدة: يذكر كل فرع عدد العينات التي سلكته "
                    "والاحتمال الذي أعطاه النموذج لذلك الرمز هناك (مرّر المؤشر)؛ واللون إنتروبيا التوزيع الذي سُحب "
                    "منه الرمز (الأغمق: أقلّ يقينًا). وفي الأسفل تلك الإنتروبيا في كل خطوة: متوسطها على العينات "
                    "ومداها."),

    # --- the Branches tab (playground/branches_panel.py) ---
    "info_branch_prompts": ("the session's prompts, newest first", "موجّهات الجلسة، الأحدث أولًا"),
    "btn_refresh": ("Refresh", "تحديث"),
    "label_run_text": ("Run text", "نص التشغيل"),
    "label_run_tokens": ("Run tokens", "رموز التشغيل"),
    "label_run_a": ("Run A", "التشغيل A"),
    "label_run_b": ("Run B", "التشغيل B"),
    "btn_compare_runs": ("Compare two runs", "مقارنة تشغيلين"),
    "label_run_a_text": ("Run A text", "نص التشغيل A"),
    "label_run_b_text": ("Run B text", "نص التشغيل B"),
    "label_runs_side_by_side": ("Runs A and B token by token (the first difference outlined, the differing tokens "
                                "underlined)",
                                "التشغيلان A وB رمزًا برمز (أول اختلاف مُحاط بإطار، والرموز المختلفة مُسطَّرة)"),
    "btn_download_tree": ("Download branch tree (JSON)", "تنزيل شجرة الفروع (JSON)"),
    "btn_load_tree": ("Load branch tree (JSON)", "تحميل شجرة فروع (JSON)"),

    # --- the Config & Share tab (playground/config_panel.py) ---
    "info_config_file_name": ("several named configs can live in one folder or repo",
                              "يمكن أن تجتمع عدة إعدادات مسمّاة في مجلد أو مستودع واحد"),
    "label_local_folder": ("Local folder", "مجلد محلي"),
    "ph_session_folder": ("this session's own folder", "مجلد هذه الجلسة"),
    "info_public_folder": ("a folder per session on this public server", "مجلد لكل جلسة على هذا الخادم العام"),
    "info_folder": ("created if missing", "يُنشأ إن لم يكن موجودًا"),
    "btn_save": ("Save", "حفظ"),
    "btn_load_folder": ("Load from folder", "تحميل من المجلد"),
    "label_download_config": ("Download saved config", "تنزيل الإعدادات المحفوظة"),
    "label_upload_config": ("Load from an uploaded JSON", "تحميل من ملف JSON مرفوع"),
    "label_repo_id": ("Hub repo id", "معرّف المستودع على Hub"),
    "label_commit_message": ("Commit message", "رسالة الإيداع"),
    "ph_commit_message": ("Add a generation config", "إضافة إعدادات توليد"),
    "label_hf_token": ("Hugging Face token", "رمز الوصول إلى Hugging Face"),
    "info_token_space": ("used only when you are not signed in", "لا يُستخدم إلا إذا لم تكن مسجّل الدخول"),
    "info_token_public": ("your own token with write access; never stored",
                          "رمز وصولك الخاص بصلاحية الكتابة؛ لا يُخزَّن أبدًا"),
    "info_token_local": ("used only when HF_TOKEN is unset; never stored",
                         "لا يُستخدم إلا إذا لم يُعيَّن HF_TOKEN؛ لا يُخزَّن أبدًا"),
    "btn_push": ("Push to the Hub", "الدفع إلى Hub"),
    "btn_load_hub": ("Load from the Hub", "تحميل من Hub"),
}

EN = {key: en for key, (en, _) in TEXTS.items()}
AR = {key: ar for key, (_, ar) in TEXTS.items()}
I18N = gr.I18n(en=EN, ar=AR)

_KEY_OF = {en: key for key, en in EN.items()}
assert len(_KEY_OF) == len(EN), "two keys share an English text: tr() could not tell them apart"
_MISSING: set[str] = set()
_USED: set[str] = set()


def tr(text: str) -> I18nData | str:
    """The English ``text`` as Gradio's translation marker (shown in the browser's language); a text with no entry
    is returned as it is and remembered in ``missing()``."""
    key = _KEY_OF.get(text)
    if key is None:
        _MISSING.add(text)
        return text
    _USED.add(key)
    return I18N(key)


def english(value):
    """The English of a label or value built with ``tr`` (anything else as it is): what tests and code compare."""
    return EN.get(value.key, value.key) if isinstance(value, I18nData) else value


def missing() -> set[str]:
    """The texts ``tr`` was asked for that have no entry (shown in English in every language)."""
    return set(_MISSING)


def unused() -> set[str]:
    """The keys no ``tr`` call asked for yet (after a full build: entries whose English no call site uses now)."""
    return set(TEXTS) - _USED
