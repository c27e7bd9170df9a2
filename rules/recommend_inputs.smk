# Input and params functions of the recommendation rules (rules/recommend.smk):
# teachfit.workflow.inputs bound to this config (input_function, rules/common.smk).
dataset_generator_entry = input_function(inputs.dataset_generator_entry)
dataset_generator_source = input_function(inputs.dataset_generator_source)
ranking_generators = input_function(inputs.ranking_generators)
ranking_sources = input_function(inputs.ranking_sources)
ranking_join_generators = input_function(inputs.ranking_join_generators)
ranking_join_reports = input_function(inputs.ranking_join_reports)
ranking_measured = input_function(inputs.ranking_measured)
select_data_entry = input_function(inputs.select_data_entry)
select_data_fields = input_function(inputs.select_data_fields)
select_data_source = input_function(inputs.select_data_source)
select_data_student = input_function(inputs.select_data_student)
select_data_student_dir = input_function(inputs.select_data_student_dir)
select_data_scoring = input_function(inputs.select_data_scoring)
select_data_settings = input_function(inputs.select_data_settings)


def gpus_select_data(wildcards):
    return model_gpus(select_data_student(wildcards))
