"""ML with no Prefect and no warehouse imports: tokenizer, GPT backbone + heads, training,
evaluation, baselines, registry, generation. Functions take and return paths, arrays and
plain objects, so they run the same inside a flow, a notebook or a test.
"""
