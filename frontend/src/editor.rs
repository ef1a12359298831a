//! The Monaco editor, through the small API `frontend/editor/editor.js` puts on
//! `window.AeroGridEditor` (Monaco itself loads lazily, on the first editor).

use js_sys::{Function, Promise};
use wasm_bindgen::{JsCast, JsValue, prelude::*};
use wasm_bindgen_futures::JsFuture;

use crate::api::Diagnostic;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = AeroGridEditor, js_name = create)]
    fn js_create(element: &web_sys::HtmlElement, code: &str, options: &JsValue) -> Promise;
    #[wasm_bindgen(js_namespace = AeroGridEditor, js_name = createDiff)]
    fn js_create_diff(
        element: &web_sys::HtmlElement,
        original: &str,
        modified: &str,
        options: &JsValue,
    ) -> Promise;
    #[wasm_bindgen(js_namespace = AeroGridEditor, js_name = setValue)]
    fn js_set_value(handle: &JsValue, code: &str);
    #[wasm_bindgen(js_namespace = AeroGridEditor, js_name = getValue)]
    fn js_get_value(handle: &JsValue) -> String;
    #[wasm_bindgen(js_namespace = AeroGridEditor, js_name = setReadOnly)]
    fn js_set_read_only(handle: &JsValue, read_only: bool);
    #[wasm_bindgen(js_namespace = AeroGridEditor, js_name = setMarkers)]
    fn js_set_markers(handle: &JsValue, diagnostics: &JsValue);
    #[wasm_bindgen(js_namespace = AeroGridEditor, js_name = dispose)]
    fn js_dispose(handle: &JsValue);
}

/// What an editor holds: its language and its label for screen readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Text {
    Code,
    Requirements,
}

impl Text {
    fn set_options(self, options: &js_sys::Object) {
        let (language, label) = match self {
            Self::Code => ("python", "Python code editor"),
            Self::Requirements => ("plaintext", "Requirements (one package per line)"),
        };
        for (key, value) in [("language", language), ("ariaLabel", label)] {
            let _ =
                js_sys::Reflect::set(options, &JsValue::from_str(key), &JsValue::from_str(value));
        }
    }
}

/// One editor (or diff view); disposed when dropped.
pub(crate) struct Editor {
    handle: JsValue,
    // Kept alive as long as the editor calls them.
    _callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Editor {
    /// An editor in `element` holding `code`; `on_change` gets the whole text on every edit,
    /// `on_save` is Ctrl/Cmd+S.
    pub(crate) async fn create(
        element: &web_sys::HtmlElement,
        text: Text,
        code: &str,
        read_only: bool,
        on_change: impl FnMut(String) + 'static,
        on_save: impl FnMut() + 'static,
    ) -> Result<Self, String> {
        let mut on_change = on_change;
        let mut on_save = on_save;
        let change = Closure::<dyn FnMut(JsValue)>::new(move |code: JsValue| {
            on_change(code.as_string().unwrap_or_default());
        });
        let save = Closure::<dyn FnMut(JsValue)>::new(move |_| on_save());
        let options = js_sys::Object::new();
        let set = |key: &str, value: &JsValue| {
            let _ = js_sys::Reflect::set(&options, &JsValue::from_str(key), value);
        };
        set("onChange", change.as_ref().unchecked_ref::<Function>());
        set("onSave", save.as_ref().unchecked_ref::<Function>());
        set("readOnly", &JsValue::from_bool(read_only));
        text.set_options(&options);
        let handle = JsFuture::from(js_create(element, code, &options)).await.map_err(describe)?;
        Ok(Self { handle, _callbacks: vec![change, save] })
    }

    /// A read-only side-by-side comparison.
    pub(crate) async fn diff(
        element: &web_sys::HtmlElement,
        text: Text,
        original: &str,
        modified: &str,
    ) -> Result<Self, String> {
        let options = js_sys::Object::new();
        text.set_options(&options);
        let handle = JsFuture::from(js_create_diff(element, original, modified, &options))
            .await
            .map_err(describe)?;
        Ok(Self { handle, _callbacks: Vec::new() })
    }

    pub(crate) fn set_value(&self, code: &str) {
        js_set_value(&self.handle, code);
    }

    pub(crate) fn value(&self) -> String {
        js_get_value(&self.handle)
    }

    pub(crate) fn set_read_only(&self, read_only: bool) {
        js_set_read_only(&self.handle, read_only);
    }

    pub(crate) fn set_markers(&self, diagnostics: &[Diagnostic]) {
        let value = serde_wasm_bindgen::to_value(diagnostics).unwrap_or(JsValue::NULL);
        js_set_markers(&self.handle, &value);
    }
}

impl Drop for Editor {
    fn drop(&mut self) {
        js_dispose(&self.handle);
    }
}

fn describe(error: JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|error| String::from(error.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "the editor could not start".to_owned())
}
