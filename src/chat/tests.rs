use super::*;

const CLOCK: Clock = Clock { unix_seconds: 1_709_211_909, utc_offset_minutes: 0 };

fn conversation(json: &str) -> Conversation {
    Conversation::from_json(json).unwrap()
}

fn render_with(template: &str, json: &str, add_generation_prompt: bool) -> Result<String> {
    let context = TemplateContext { bos_token: "<s>", eos_token: "</s>", add_generation_prompt, clock: CLOCK };
    render(template, &conversation(json), &context)
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn renders_chatml_with_and_without_generation_prompt() {
    let json = r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi ✓"}]}"#;
    let want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi ✓<|im_end|>\n";
    assert_eq!(render_with(CHATML, json, false).unwrap(), want);
    assert_eq!(render_with(CHATML, json, true).unwrap(), format!("{want}<|im_start|>assistant\n"));
}

#[test]
fn blocks_trim_their_newline_and_leading_space() {
    let template = "{% for m in messages %}\n    {% if loop.first %}\n[{{ m.role }}]\n    {% endif %}\n{% endfor %}\n";
    assert_eq!(render_with(template, r#"{"messages":[{"role":"a"},{"role":"b"}]}"#, false).unwrap(), "[a]\n");
}

#[test]
fn python_features_real_templates_use() {
    let template = concat!(
        "{% set ns = namespace(last=-1) %}",
        "{% for m in messages[::-1] %}{% if m.role == 'user' and ns.last == -1 %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}",
        "{{ ns.last }}|{{ messages[-1].content.strip().split(' ')|join(',') }}|",
        "{{ messages[0].content.startswith('  x') }}|{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}|",
        "{{ none }} {{ true }} {{ 2.0 }} {{ ['a', none] }}|",
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|",
        "{{ strftime_now('%d %b %Y') }}",
    );
    let json = r#"{"messages":[{"role":"user","content":"  x "},{"role":"assistant","content":" a b "}]}"#;
    assert_eq!(
        render_with(template, json, false).unwrap(),
        "1|a,b|True|role=user;content=  x ;|None True 2.0 ['a', None]|user|29 Feb 2024"
    );
}

#[test]
fn tojson_is_python_json_dumps() {
    let json = r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"b":1,"a":"é"}}}]}"#;
    let template = "{{ tools[0] | tojson }}\n{{ tools[0].function | tojson(indent=2, sort_keys=true) }}\n{{ tools | tojson(separators=(',', ':')) }}";
    assert_eq!(
        render_with(template, json, false).unwrap(),
        concat!(
            r#"{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": "é"}}}"#,
            "\n{\n  \"name\": \"f\",\n  \"parameters\": {\n    \"a\": \"é\",\n    \"b\": 1\n  }\n}\n",
            r#"[{"type":"function","function":{"name":"f","parameters":{"b":1,"a":"é"}}}]"#
        )
    );
}

#[test]
fn raise_exception_becomes_a_coded_error_with_its_message() {
    let template = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}";
    let e = render_with(template, r#"{"messages":[{"role":"assistant","content":"x"}]}"#, true).unwrap_err();
    assert_eq!(e.code(), "ERR_CHAT_TEMPLATE");
    assert_eq!(e.to_string(), "chat template: Conversation roles must alternate user/assistant/user/assistant/...");
    let e = render_with("{% for %}", r#"{"messages":[]}"#, true).unwrap_err();
    assert_eq!(e.code(), "ERR_CHAT_TEMPLATE");
    assert!(e.to_string().contains("syntax error"), "{e}");
}

#[test]
fn hostile_templates_run_out_of_fuel() {
    let hostile = [
        // Doubling a string: 2^40 bytes if nothing stopped it.
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        // Endless-looking nested loops.
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        // A huge repetition in one operation.
        "{{ 'x' * 10000000000 }}",
        // A huge indentation (found by the fuzzer: it was allocated before any fuel was charged).
        "{{ messages | tojson(indent=99999999999999) }}",
        "{{ [[[[1, 2], [3]], [[4]]]] * 1000 | tojson(indent=1000000) }}",
        // Output that grows without bound.
        "{% for a in range(100000) %}{% for b in range(100000) %}xxxxxxxxxxxxxxxx{% endfor %}{% endfor %}",
    ];
    for template in hostile {
        let started = std::time::Instant::now();
        let e = render_with(template, r#"{"messages":[]}"#, true).unwrap_err();
        assert_eq!(e.code(), "ERR_CHAT_TEMPLATE", "{template}");
        assert!(started.elapsed().as_secs_f64() < 5.0, "{template} took {:?}", started.elapsed());
    }
}

#[test]
fn messages_are_checked() {
    for (json, want) in [
        ("[", "not valid JSON"),
        (r#"{"messages":{}}"#, "must be an array"),
        (r#"{"messages":[{"content":"x"}]}"#, "message 0 needs a string `role`"),
        (r#"{"messages":[],"tools":{}}"#, "must be an array"),
    ] {
        let e = Conversation::from_json(json).err().unwrap();
        assert_eq!(e.code(), "ERR_INVALID_OPTION");
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn generation_tags_become_blocks_and_odd_delimiters_pass_through() {
    assert_eq!(without_generation_tags("a{%- generation -%}b{% endgeneration %}"), "a{%- if true -%}b{% endif %}");
    // Found by the fuzzer: `{%}` once sliced the tag backwards; an unclosed tag was copied twice.
    for source in ["{%}generation", "x{% generation", "generation{%", "{%%}generation{%-%}"] {
        assert_eq!(without_generation_tags(source), source);
    }
}
