# Input and params functions of the study rules (teacher, evolve, ifs): teachfit.workflow.inputs
# bound to this config (input_function, rules/common.smk). Metadata travels as params aligned
# with the inputs (teacher_generators with teacher_responses, teacher_score_keys with
# teacher_scores, teacher_winrate_runs with teacher_winrates, ...). Functions that read a
# checkpoint's output get its reader (ranked_evolvers, pool_rows).

# --- teacher study
teacher_generators = input_function(inputs.teacher_generators)
teacher_bases = input_function(inputs.teacher_bases)
teacher_reference_model = input_function(inputs.teacher_reference_model)
teacher_responses = input_function(inputs.teacher_responses)
teacher_score_keys = input_function(inputs.teacher_score_keys)
teacher_scores = input_function(inputs.teacher_scores)
teacher_conventions = input_function(inputs.teacher_conventions)
teacher_evals = input_function(inputs.teacher_evals)
teacher_winrate_runs = input_function(inputs.teacher_winrate_runs)
teacher_winrates = input_function(inputs.teacher_winrates)
winrate_instructions = input_function(inputs.winrate_instructions)
winrate_reference = input_function(inputs.winrate_reference)
winrate_hub_source = input_function(inputs.winrate_hub_source)
winrate_max_new_tokens = input_function(inputs.winrate_max_new_tokens)
winrate_judge_dir = input_function(inputs.winrate_judge_dir)
winrate_judge_backend = input_function(inputs.winrate_judge_backend)
winrate_judge_prompt = input_function(inputs.winrate_judge_prompt)
winrate_judge_settings = input_function(inputs.winrate_judge_settings)
winrate_glm = input_function(inputs.winrate_glm)

# --- evolve study: checkpoints pool_evolved (is an evolver's pool big enough to answer?) and
# merge_evolved (which evolvers are ranked) make the DAG depend on what the gate kept.
#: the generator answering every evolved set (a name even when the study is off, for split_evolved's output)
EVOLVER_TEACHER = inputs.evolver_teacher(config)
autoif_seed_instructions = input_function(inputs.autoif_seed_instructions)
previous_round = input_function(inputs.previous_round)
evolver_dir = input_function(inputs.evolver_dir)
evolver_backend = input_function(inputs.evolver_backend)
evolver_prompt_format = input_function(inputs.evolver_prompt_format)
evolution_round = input_function(inputs.evolution_round)
evolution_settings = input_function(inputs.evolution_settings)
autoif_settings = input_function(inputs.autoif_settings)
evolver_round_info = input_function(inputs.evolver_round_info)
evolver_round_files = input_function(inputs.evolver_round_files)
pool_responses = input_function(inputs.pool_responses)
answered_evolvers = input_function(inputs.answered_evolvers, pool_rows=pool_rows)
answered_sets = input_function(inputs.answered_sets, pool_rows=pool_rows)
answered_drops = input_function(inputs.answered_drops, pool_rows=pool_rows)
pool_summaries = input_function(inputs.pool_summaries)
merged_round_info = input_function(inputs.merged_round_info)
evolved_round_drops = input_function(inputs.evolved_round_drops)
scenario_evolvers = input_function(inputs.scenario_evolvers)
evolver_teacher_responses = input_function(inputs.evolver_teacher_responses)
evolver_judge_dir = input_function(inputs.evolver_judge_dir)
evolver_judge_backend = input_function(inputs.evolver_judge_backend)
evolver_embed_dir = input_function(inputs.evolver_embed_dir)
evolved_stats = input_function(inputs.evolved_stats, ranked=ranked_evolvers)
evolved_drop_sets = input_function(inputs.evolved_drop_sets)
evolved_drop_tables = input_function(inputs.evolved_drop_tables)
evolved_rankings = input_function(inputs.evolved_rankings)
evolver_comparison_runs = input_function(
    inputs.evolver_comparison_runs, ranked=ranked_evolvers
)
evolver_comparison_evals = input_function(
    inputs.evolver_comparison_evals, ranked=ranked_evolvers
)
evolver_selection_runs = input_function(
    inputs.evolver_selection_runs, ranked=ranked_evolvers
)
evolver_selection_evals = input_function(
    inputs.evolver_selection_evals, ranked=ranked_evolvers
)
evolver_selection_trainsets = input_function(
    inputs.evolver_selection_trainsets, ranked=ranked_evolvers
)
top1_round_info = input_function(inputs.top1_round_info)
top1_files = input_function(inputs.top1_files)

# --- ifs study
tone_pairs = input_function(inputs.tone_pairs, ranked=ranked_evolvers)
tone_encoder_dir = input_function(inputs.tone_encoder_dir)
ifs_prompt_source = input_function(inputs.ifs_prompt_source)
objecqa_questions = input_function(inputs.objecqa_questions)
objecqa_calibration = input_function(inputs.objecqa_calibration)
objecqa_judge_set = input_function(inputs.objecqa_judge_set)
objecqa_judge_dir = input_function(inputs.objecqa_judge_dir)
ifs_judge_backend = input_function(inputs.ifs_judge_backend)
ifs_tables_input = input_function(inputs.ifs_tables_input, ranked=ranked_evolvers)

# --- per_instruction generators (rule mix_responses)
per_instruction_entry = input_function(inputs.per_instruction_entry)
per_instruction_names = input_function(inputs.per_instruction_names)
per_instruction_candidates = input_function(inputs.per_instruction_candidates)
per_instruction_scores = input_function(inputs.per_instruction_scores)
