"""Local copies of the hub datasets the registry reads, laid out as the hub lays them out (README.md with
its ``configs:`` front matter, parquet or JSON data files), holding a few records in each dataset's own
schema: what ``$POLAR_HUB_DATA`` points at in the tests (tests/test_hub_data.py, tests/test_stock_eval.py, the
paper-profile smoke)."""
import json
from pathlib import Path

import pandas as pd
import yaml

PIQA = [
    {"goal": "When boiling butter, when it's ready, you can", "sol1": "Pour it onto a plate",
     "sol2": "Pour it into a jar", "label": 1},
    {"goal": "To permanently attach metal legs to a chair, you can",
     "sol1": "Weld the metal together to get it to stay firmly in place",
     "sol2": "Nail the metal together to get it to stay firmly in place", "label": 0},
    {"goal": "how do you indent something?", "sol1": "leave a space before starting the writing",
     "sol2": "press the spacebar", "label": 0},
]
SIQA = [
    {"context": "Cameron decided to have a barbecue and gathered her friends together.",
     "question": "How would Others feel as a result?", "answerA": "like attending", "answerB": "like staying home",
     "answerC": "a good friend to have", "label": "1"},
    {"context": "Jan needed to give out jobs for an upcoming project at work.",
     "question": "What will Others want to do next?", "answerA": "disagree with Jan", "answerB": "get to work",
     "answerC": "argue with the assignments", "label": "2"},
    {"context": "Remy was an expert fisherman and was on the water with Kai. Remy baited Kai's hook.",
     "question": "What will Remy want to do next?", "answerA": "cast the line", "answerB": "put the boat in the water",
     "answerC": "invite Kai out on the boat", "label": "1"},
]
WINOGRANDE_XL = [
    {"sentence": "Ian volunteered to eat Dennis's menudo after already having a bowl because _ despised eating intestine.",
     "option1": "Ian", "option2": "Dennis", "answer": "2"},
    {"sentence": "He never comes to my home, but I always go to his house because the _ is smaller.",
     "option1": "home", "option2": "house", "answer": "1"},
    {"sentence": "Kyle doesn't wear leg warmers to bed, while Logan almost always does. _ is more likely to live in "
                 "a colder climate.", "option1": "Kyle", "option2": "Logan", "answer": "2"},
]
WINOGRANDE_XS = [{"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
                  "option1": "Sarah", "option2": "Maria", "answer": "1"}]
HELLASWAG_TRAIN = [
    {"ind": 4, "activity_label": "Removing ice from car",
     "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.",
     "ctx_b": "then", "endings": [", the man adds wax to the windshield and cuts it.",
                                  ", a person board a ski lift, while two men supporting the head of the person.",
                                  ", the man puts on a christmas coat, knitted with netting.",
                                  ", the man continues removing the snow on his car."],
     "source_id": "activitynet~v_-1IBHYS3L-Y", "split": "train", "split_type": "indomain", "label": "3"},
    {"ind": 25, "activity_label": "Personal Care and Style",
     "ctx_a": "[header] How to dye your hair with semi permanent hair dye [title] Find the color you want.", "ctx_b": "",
     "endings": ["[substeps] Semi permanent dye comes in many shades. [title] Pick one close to your own.",
                 "Do not wash your hair for a week before.  [step] Oils protect the scalp.",
                 "[title] Bleach every strand first.", "Buy three boxes of permanent dye."],
     "source_id": "wikihow~32", "split": "train", "split_type": "indomain", "label": "0"},
    {"ind": 37, "activity_label": "Playing harmonica",
     "ctx_a": "A man is standing in a room holding a harmonica.", "ctx_b": "He",
     "endings": ["puts the harmonica to his mouth and plays a tune.", "throws the harmonica into a lake.",
                 "eats the harmonica.", "paints the wall with it."],
     "source_id": "activitynet~v_5e1", "split": "train", "split_type": "zeroshot", "label": "0"},
]
HELLASWAG_VALIDATION = [
    {"ind": 24, "activity_label": "Roof shingle removal",
     "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain", "label": "3"},
    {"ind": 92, "activity_label": "Clean and jerk",
     "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.", "ctx_b": "the lady",
     "endings": ["swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope attached to the barbell.",
                 "stands and lifts the weight over her head."],
     "source_id": "activitynet~v_-lJS58hyo1c", "split": "val", "split_type": "zeroshot", "label": "3"},
]
METAMATHQA = [
    {"query": "Gracie and Joe are choosing numbers on the complex plane. Joe chooses the point $1+2i$. Gracie chooses "
              "$-1+i$. How far apart are Gracie and Joe's points?",
     "response": "The distance between two points $(x_1,y_1)$ and $(x_2,y_2)$ is $\\sqrt{(x_2-x_1)^2+(y_2-y_1)^2}$.\n"
                 "Here it is $\\sqrt{(-1-1)^2+(1-2)^2}=\\sqrt{5}$.\nThe answer is: \\sqrt{5}",
     "type": "MATH_AnsAug", "original_question": "Gracie and Joe are choosing numbers on the complex plane."},
    {"query": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much "
              "did she earn?",
     "response": "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n#### 10\n"
                 "The answer is: 10",
     "type": "GSM_AnsAug", "original_question": "Weng earns $12 an hour for babysitting."},
    {"query": "If $x$ satisfies $2x + 3 = 11$, what is $x$?", "response": "Subtracting 3 gives $2x = 8$, so $x = 4$.\n"
              "The answer is: 4", "type": "MATH_Rephrased", "original_question": "Solve $2x+3=11$."},
]
# openai/gsm8k, config main: question, answer (the worked solution with <<calculator>> annotations, then
# "#### <number>"). Five train records for the stock task's 5 shots, four test records.
GSM8K_TRAIN = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How "
                 "many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
               "in April and May.\n#### 72"},
    {"question": "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
                 "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her "
                 "parents. How much more money does Betty need to buy the wallet?",
     "answer": "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nBetty's grandparents gave her 15 * 2 = "
               "$<<15*2=30>>30.\nThis means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5"},
    {"question": "A bakery makes 3 batches of muffins a day with 24 muffins in each batch. It sells 60 muffins a day. "
                 "How many muffins are left over after 5 days?",
     "answer": "The bakery makes 3 * 24 = <<3*24=72>>72 muffins a day.\nIt has 72 - 60 = <<72-60=12>>12 left each "
               "day.\nAfter 5 days that is 12 * 5 = <<12*5=60>>60 muffins.\n#### 60"},
    {"question": "Tom reads 12 pages of his book on Monday and twice as many pages on Tuesday. The book has 90 pages. "
                 "How many pages does he still have to read?",
     "answer": "On Tuesday he reads 12 * 2 = <<12*2=24>>24 pages.\nHe has read 12 + 24 = <<12+24=36>>36 pages.\nHe "
               "still has 90 - 36 = <<90-36=54>>54 pages to read.\n#### 54"},
    {"question": "A garden has 4 rows of tomato plants with 7 plants in each row. Each plant gives 5 tomatoes. How "
                 "many tomatoes does the garden give?",
     "answer": "There are 4 * 7 = <<4*7=28>>28 plants.\nThey give 28 * 5 = <<28*5=140>>140 tomatoes.\n#### 140"},
]
GSM8K_TEST = [
    {"question": "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
                 "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
                 "fresh duck egg. How much in dollars does she make every day at the farmers' market?",
     "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at "
               "the farmer's market.\n#### 18"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it "
                 "take?",
     "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is 2+1=<<2+1=3>>3 bolts of "
               "fabric\n#### 3"},
    {"question": "A school orders 1,250 pencils and gives each of its 25 classes the same number. How many pencils "
                 "does each class get?",
     "answer": "Each class gets 1250 / 25 = <<1250/25=50>>50 pencils.\n#### 50"},
    {"question": "Maria buys 3 notebooks at $4 each and 2 pens at $1.50 each. How much does she spend?",
     "answer": "The notebooks cost 3 * 4 = $<<3*4=12>>12.\nThe pens cost 2 * 1.5 = $<<2*1.5=3>>3.\nShe spends 12 + 3 = "
               "$<<12+3=15>>15.\n#### 15"},
]
# EleutherAI/hendrycks_math: one config per subject (the stock subtasks' dataset_name), each with train and test;
# problem, level, type, solution (its answer in the last \boxed{...}, what lm-eval's process_docs extracts).
HENDRYCKS_MATH = {
    "algebra": {
        "train": [{"problem": "If $3x - 7 = 11$, what is the value of $x$?", "level": "Level 1", "type": "Algebra",
                   "solution": "Adding 7 to both sides gives $3x = 18$, so $x = \\boxed{6}$."}],
        "test": [{"problem": "What is the sum of the roots of $x^2 - 5x + 6 = 0$?", "level": "Level 2",
                  "type": "Algebra", "solution": "By Vieta's formulas the sum of the roots is $\\boxed{5}$."},
                 {"problem": "Evaluate $\\left(\\frac{1}{2}\\right)^{3}$.", "level": "Level 1", "type": "Algebra",
                  "solution": "$\\left(\\frac{1}{2}\\right)^{3} = \\frac{1}{2^3} = \\boxed{\\frac{1}{8}}$."}]},
    "counting_and_probability": {
        "train": [{"problem": "How many ways are there to arrange the letters of the word CAT?", "level": "Level 1",
                   "type": "Counting & Probability", "solution": "There are $3! = \\boxed{6}$ arrangements."}],
        "test": [{"problem": "Compute $\\dbinom{6}{2}$.", "level": "Level 1", "type": "Counting & Probability",
                  "solution": "$\\dbinom{6}{2} = \\frac{6 \\times 5}{2} = \\boxed{15}$."}]},
    "geometry": {
        "train": [{"problem": "A square has a perimeter of 20 cm. What is its area, in square centimeters?",
                   "level": "Level 1", "type": "Geometry",
                   "solution": "Each side is $20/4 = 5$ cm, so the area is $5^2 = \\boxed{25}$ square centimeters."}],
        "test": [{"problem": "The legs of a right triangle are 6 and 8. What is the length of its hypotenuse?",
                  "level": "Level 1", "type": "Geometry",
                  "solution": "The hypotenuse is $\\sqrt{6^2 + 8^2} = \\sqrt{100} = \\boxed{10}$."}]},
    "intermediate_algebra": {
        "train": [{"problem": "Find the remainder when $x^3 + 2x + 1$ is divided by $x - 1$.", "level": "Level 2",
                   "type": "Intermediate Algebra",
                   "solution": "By the remainder theorem the remainder is $1 + 2 + 1 = \\boxed{4}$."}],
        "test": [{"problem": "Find the product of the roots of $2x^3 - 4x^2 + 3x - 8 = 0$.", "level": "Level 2",
                  "type": "Intermediate Algebra",
                  "solution": "By Vieta's formulas the product of the roots is $-\\frac{-8}{2} = \\boxed{4}$."}]},
    "number_theory": {
        "train": [{"problem": "What is the greatest common divisor of 84 and 126?", "level": "Level 2",
                   "type": "Number Theory", "solution": "$84 = 2^2 \\cdot 3 \\cdot 7$ and $126 = 2 \\cdot 3^2 \\cdot "
                   "7$, so their gcd is $2 \\cdot 3 \\cdot 7 = \\boxed{42}$."}],
        "test": [{"problem": "What is the remainder when $2^{10}$ is divided by 7?", "level": "Level 2",
                  "type": "Number Theory",
                  "solution": "$2^3 = 8 \\equiv 1 \\pmod 7$, so $2^{10} = (2^3)^3 \\cdot 2 \\equiv \\boxed{2}$."}]},
    "prealgebra": {
        "train": [{"problem": "What is $15\\%$ of 80?", "level": "Level 1", "type": "Prealgebra",
                   "solution": "$0.15 \\times 80 = \\boxed{12}$."}],
        "test": [{"problem": "Simplify $\\frac{18}{24}$.", "level": "Level 1", "type": "Prealgebra",
                  "solution": "Dividing numerator and denominator by 6 gives $\\boxed{\\frac{3}{4}}$."}]},
    "precalculus": {
        "train": [{"problem": "Compute $\\cos 0^\\circ$.", "level": "Level 1", "type": "Precalculus",
                   "solution": "$\\cos 0^\\circ = \\boxed{1}$."}],
        "test": [{"problem": "Compute $\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix} \\begin{pmatrix} 1 \\\\ 1 "
                             "\\end{pmatrix}$.", "level": "Level 2", "type": "Precalculus",
                  "solution": "The product is $\\boxed{\\begin{pmatrix} 3 \\\\ 7 \\end{pmatrix}}$."}]},
}
# GLUE task -> split -> records, in nyu-mll/glue's columns (label: ClassLabel int, STS-B float32, its scores exact
# in float32; idx). The validation splits that notebook 05 scores at its CI defaults and its paper-profile smoke
# with a correlation (RTE, STS-B, CoLA) hold at least 3 records with both labels (STS-B: distinct scores), so that
# every GLUE metric is defined on them.
GLUE = {
    "cola": {"train": [{"sentence": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1},
                       {"sentence": "They drank the pub.", "label": 0},
                       {"sentence": "The more we study verbs, the crazier they get.", "label": 1}],
             "validation": [{"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1},
                            {"sentence": "The car honked down the road.", "label": 0},
                            {"sentence": "Mary sang a song to the children.", "label": 1}]},
    "sst2": {"train": [{"sentence": "hide new secretions from the parental units ", "label": 0},
                       {"sentence": "that loves its characters and communicates something rather beautiful ", "label": 1},
                       {"sentence": "contains no wit , only labored gags ", "label": 0}],
             "validation": [{"sentence": "it 's a charming and often affecting journey . ", "label": 1}]},
    "mrpc": {"train": [{"sentence1": "Amrozi accused his brother , whom he called \" the witness \" , of deliberately "
                                     "distorting his evidence .", "sentence2": "Referring to him as only \" the witness "
                                     "\" , Amrozi accused his brother of deliberately distorting his evidence .", "label": 1},
                       {"sentence1": "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 .",
                        "sentence2": "Yucaipa bought Dominick 's in 1995 for $ 693 million .", "label": 0}],
             "validation": [{"sentence1": "He said the foodservice pie business does n't fit the company 's strategy .",
                             "sentence2": "The foodservice pie business does not fit our long-term growth strategy .",
                             "label": 1}]},
    "qqp": {"train": [{"question1": "How is the life of a math student?", "question2": "Which level of prepration is "
                       "enough for the exam jlpt5?", "label": 0},
                      {"question1": "How do I control my horny emotions?", "question2": "How do you control your "
                       "horniness?", "label": 1}],
            "validation": [{"question1": "Why are African-Americans so beautiful?", "question2": "Why are hispanics "
                            "so beautiful?", "label": 0}]},
    "stsb": {"train": [{"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.", "label": 5.0},
                       {"sentence1": "A man is playing a large flute.", "sentence2": "A man is playing a flute.",
                        "label": 3.75},
                       {"sentence1": "A man is slicing a tomato.", "sentence2": "A woman is dancing.", "label": 0.5}],
             "validation": [{"sentence1": "A man with a hard hat is dancing.", "sentence2": "A man wearing a hard hat "
                             "is dancing.", "label": 5.0},
                            {"sentence1": "A young child is riding a horse.", "sentence2": "A child is riding a horse.",
                             "label": 4.75},
                            {"sentence1": "A woman is cutting an onion.", "sentence2": "A man is playing the guitar.",
                             "label": 0.0},
                            {"sentence1": "A cat is sitting on a mat.", "sentence2": "A dog is lying on a rug.",
                             "label": 1.25}]},
    "mnli": {"train": [{"premise": "Conceptually cream skimming has two basic dimensions - product and geography.",
                        "hypothesis": "Product and geography are what make cream skimming work. ", "label": 1},
                       {"premise": "you know during the season and i guess at at your level uh you lose them to the "
                                   "next level", "hypothesis": "You lose the things to the following level if the "
                                   "people recall.", "label": 0},
                       {"premise": "One of our number will carry out your instructions minutely.",
                        "hypothesis": "A member of my team will execute your orders with immense precision.", "label": 0}],
             "validation_matched": [{"premise": "The new rights are nice enough", "hypothesis": "Everyone really likes "
                                     "the newest benefits ", "label": 1}],
             "validation_mismatched": [{"premise": "Your contribution helped make it possible for us to provide our "
                                        "students with a quality education.", "hypothesis": "Your contributions were "
                                        "of no help with our students' education.", "label": 2}]},
    "qnli": {"train": [{"question": "When did the third Digimon series begin?", "sentence": "Unlike the two seasons "
                        "before it and most of the seasons that followed, Digimon Tamers takes a darker approach.",
                        "label": 1}],
             "validation": [{"question": "What came into force after the new constitution was herald?",
                             "sentence": "As of that day, the new constitution heralding the Second Republic came "
                                         "into force.", "label": 0}]},
    "rte": {"train": [{"sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.",
                       "sentence2": "Weapons of Mass Destruction Found in Iraq.", "label": 1},
                      {"sentence1": "A place of sorrow, after Pope John Paul II died, became a place of celebration.",
                       "sentence2": "Pope Benedict XVI is the new leader of the Roman Catholic Church.", "label": 1}],
             "validation": [{"sentence1": "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung "
                                          "cancer at age 44.", "sentence2": "Christopher Reeve had an accident.",
                             "label": 1},
                            {"sentence1": "The bridge was completed in 1937 and spans the Golden Gate strait.",
                             "sentence2": "The Golden Gate Bridge was finished in 1937.", "label": 0},
                            {"sentence1": "Heavy rain flooded several streets in the city centre on Monday.",
                             "sentence2": "The city centre had a dry Monday.", "label": 1}]},
}
GLUE_TEXT_FIELDS = {"cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
                    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
                    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}


def write_hub_repo(root: Path, dataset_id: str, configs: dict, dtypes: dict | None = None) -> Path:
    """A copy of hub dataset ``dataset_id`` as the hub lays it out: ``<config>/<split>-00000-of-00001.parquet``
    per config (``data/`` for the default one; columns cast to ``dtypes[config]``) and a README.md whose
    front matter declares them."""
    repo = root / dataset_id
    declared = []
    for config, splits in configs.items():
        folder = "data" if config == "default" else config
        (repo / folder).mkdir(parents=True, exist_ok=True)
        for split, records in splits.items():
            frame = pd.DataFrame(records).astype((dtypes or {}).get(config, {}))
            frame.to_parquet(repo / folder / f"{split}-00000-of-00001.parquet", index=False)
        declared.append({"config_name": config,
                         "data_files": [{"split": split, "path": f"{folder}/{split}-*"} for split in splits]})
    front_matter = yaml.safe_dump({"configs": declared}, sort_keys=False)
    (repo / "README.md").write_text(f"---\n{front_matter}---\n# {dataset_id}\n")
    return repo


def write_hub_copy(root: Path) -> Path:
    """A local copy of every hub dataset the registry reads (the folder ``$POLAR_HUB_DATA`` names), in ``root``."""
    write_hub_repo(root, "baber/piqa", {"default": {"train": PIQA}})
    write_hub_repo(root, "lighteval/siqa", {"default": {"train": SIQA}})
    write_hub_repo(root, "allenai/winogrande", {"winogrande_xs": {"train": WINOGRANDE_XS},
                                                "winogrande_xl": {"train": WINOGRANDE_XL}})
    write_hub_repo(root, "Rowan/hellaswag", {"default": {"train": HELLASWAG_TRAIN, "validation": HELLASWAG_VALIDATION}},
                   dtypes={"default": {"ind": "int32"}})
    glue = {task: {split: [dict(record, idx=i) for i, record in enumerate(records)] for split, records in splits.items()}
            for task, splits in GLUE.items()}
    write_hub_repo(root, "nyu-mll/glue", glue, dtypes={task: {"idx": "int32"} for task in GLUE} | {
        "stsb": {"idx": "int32", "label": "float32"}})
    write_hub_repo(root, "openai/gsm8k", {"main": {"train": GSM8K_TRAIN, "test": GSM8K_TEST}})
    write_hub_repo(root, "EleutherAI/hendrycks_math", HENDRYCKS_MATH)
    metamath = root / "meta-math/MetaMathQA"  # one JSON file, no configs: datasets names its split "train"
    metamath.mkdir(parents=True)
    (metamath / "MetaMathQA-395K.json").write_text(json.dumps(METAMATHQA, indent=2))
    (metamath / "README.md").write_text("---\nlicense: mit\n---\n# MetaMathQA\n")
    return root
